// #/ota: firmware campaigns (GET /api/v1/ota/campaigns): target, state, stages with the active
// one marked, each stage's progress (offered, installed, failed) and why a campaign halted.
import { optional } from './api.js';
import { bar, badge, facts, fill, h, notice, objectTable, plain, section, text, unavailable } from './dom.js';

// Field names a campaign may use for the same fact.
const pick = (object, ...keys) => keys.map((k) => object[k]).find((v) => v !== undefined && v !== null);

export async function mount(root) {
  const page = h('div', { class: 'ota', testid: 'ota-campaigns' });
  root.append(h('h1', {}, 'OTA campaigns'), page);

  async function load() {
    const campaigns = await optional('/ota/campaigns').catch(() => undefined);
    if (campaigns === null) return fill(page, unavailable('The OTA campaign list', '/ota/campaigns'));
    if (campaigns === undefined) return fill(page, notice('The campaigns could not be read.'));
    const list = Array.isArray(campaigns) ? campaigns : (campaigns.campaigns ?? []);
    fill(page, list.length ? list.map(campaign) : notice('No campaign.'));
  }

  await load();
  return { refresh: load, wants: () => false };
}

function campaign(c) {
  const halt = pick(c, 'halt_reason', 'halted_reason', 'halt');
  const stages = c.stages ?? [];
  return section(`Campaign ${plain(c.id)}`, { class: 'panel campaign', 'data-id': plain(c.id) },
    halt ? h('div', { class: 'warning', role: 'status' }, h('strong', {}, 'Halted: '), plain(halt)) : null,
    facts([
      ['target', text(pick(c, 'target', 'firmware_version'))], ['state', badge('campaign', plain(c.state))],
      ['active stage', text(pick(c, 'active_stage', 'stage'))], ['device classes', text(plain(c.device_classes))],
    ]),
    stages.length && typeof stages[0] === 'object' ? stageTable(stages) : notice(`Stages: ${plain(stages)}`));
}

function stageTable(stages) {
  const table = objectTable(stages, { empty: 'No stage.' });
  // Beside each stage, how far it got: installed out of offered (failures count as done).
  const rows = table.querySelectorAll('tbody tr');
  stages.forEach((stage, i) => {
    const offered = Number(pick(stage, 'offered', 'devices') ?? 0);
    const installed = Number(pick(stage, 'installed_ok', 'installed', 'ok') ?? 0);
    const failed = Number(pick(stage, 'failed') ?? 0);
    if (stage.active) rows[i]?.classList.add('active');
    rows[i]?.append(h('td', { class: 'bar-cell', title: `${installed} installed, ${failed} failed of ${offered}` },
      bar(installed + failed, offered), ` ${installed}/${offered}`));
  });
  table.querySelector('thead tr').append(h('th', { scope: 'col' }, 'progress'));
  return table;
}
