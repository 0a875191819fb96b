// #/ota: firmware campaigns (GET /api/v1/ota/campaigns): target, state, stages with the active
// one marked, each stage's progress (offered, installed, failed) and why a campaign halted.
import { optional } from './api.js';
import { bar, badge, facts, fill, h, notice, section, table, time, unavailable } from './dom.js';

export async function mount(root) {
  const page = h('div', { class: 'ota', testid: 'ota-campaigns' });
  root.append(h('h1', {}, 'OTA campaigns'), page);

  async function load() {
    const campaigns = await optional('/ota/campaigns').catch(() => undefined);
    if (campaigns === null) return fill(page, unavailable('The OTA campaign list', '/ota/campaigns'));
    if (campaigns === undefined) return fill(page, notice('The campaigns could not be read.'));
    fill(page, campaigns.length ? campaigns.map(campaign) : notice('No campaign.'));
  }

  await load();
  return { refresh: load, wants: () => false };
}

function campaign(c) {
  const active = c.active_stage ?? null;
  return section(`Campaign ${c.id}`, { class: 'panel campaign', 'data-id': c.id },
    c.halt_reason ? h('div', { class: 'warning', role: 'status' }, h('strong', {}, 'Halted: '), c.halt_reason) : null,
    facts([
      ['target', `${c.target} (version ${c.firmware_version})`],
      ['signed by role', c.role],
      ['device classes', c.device_classes.length ? c.device_classes.join(', ') : 'all'],
      ['state', badge('campaign', c.state)],
      ['active stage', active === null ? null : (c.stages[active]?.name ?? String(active))],
      ['since', time(c.stage_started_at)],
      ['maintenance windows (UTC)', c.windows.length ? c.windows.join(', ') : 'any time'],
      ['halts above', `${Math.round(c.failure_threshold * 100)} % failed in a stage`],
    ]),
    table(STAGE_COLUMNS, c.stages.map((stage, index) => ({ ...stage, active: index === active })), {
      empty: 'No stage.', rowAttrs: (stage) => ({ class: stage.active ? 'active' : null }),
    }));
}

// Each stage and how far it got: installed and failed out of the devices offered it.
const STAGE_COLUMNS = [
  { label: 'stage', cell: (s) => (s.active ? `${s.name} (active)` : s.name) },
  { label: 'devices', class: 'num', cell: (s) => String(s.devices) },
  { label: 'offered', class: 'num', cell: (s) => String(s.offered) },
  { label: 'installed', class: 'num', cell: (s) => String(s.installed) },
  { label: 'failed', class: 'num', cell: (s) => String(s.failed) },
  { label: 'progress', class: 'bar-cell', cell: (s) => [bar(s.installed + s.failed, s.offered), ` ${s.installed}/${s.offered}`] },
];
