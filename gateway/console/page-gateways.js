// #/gateways (fleet hub only): every gateway by site, whether it still reports, the policy
// bundle it enforces and its last health report (GET /api/v1/gateways with site, stale and the
// Next-Cursor). A gateway's name leads to its devices.
import { badge, debounce, h, labelled, options, text, time } from './dom.js';
import { keepFilters, pagedTable, readFilters } from './list.js';

const PAGE_SIZE = 50;
const FILTERS = ['site', 'stale'];

const devicesOf = (g) => `#/devices?site=${encodeURIComponent(g.site)}&gateway=${encodeURIComponent(g.gateway)}`;

const COLUMNS = [
  { label: 'site', cell: (g) => g.site },
  { label: 'gateway', cell: (g) => h('a', { href: devicesOf(g) }, g.gateway) },
  { label: 'health', cell: (g) => badge('health', g.stale ? 'stale' : 'live') },
  { label: 'last seen', cell: (g) => time(g.last_seen) },
  { label: 'version', cell: (g) => text(g.version) },
  { label: 'policy bundle', cell: (g) => text(g.policy_version) },
  { label: 'refused bundle', class: 'wrap', cell: (g) => (g.health?.policy_refused
    ? `${g.health.policy_refused.version}: ${g.health.policy_refused.reason}` : '—') },
  { label: 'XDP', cell: (g) => text(g.health?.xdp_mode) },
  { label: 'devices', class: 'num', cell: (g) => text(g.health?.devices) },
  { label: 'outbox backlog', class: 'num', cell: (g) => text(g.health?.outbox_backlog) },
];

export async function mount(root, ctx) {
  const filter = readFilters(ctx.query, FILTERS);
  const site = h('input', { type: 'text', testid: 'gateway-filter-site', value: filter.site, placeholder: 'site' });
  const stale = h('select', { testid: 'gateway-filter-stale' },
    options(['', 'true', 'false'], filter.stale, { '': 'all', true: 'stale only', false: 'live only' }));
  const list = pagedTable('/gateways', () => ({ ...filter, limit: PAGE_SIZE }), COLUMNS, {
    testid: 'gateway-table', rowTestid: 'gateway-row', rowHref: devicesOf,
    rowAttrs: (g) => ({ 'data-gateway': `${g.site}/${g.gateway}`, 'data-stale': String(g.stale) }),
    empty: 'No gateway has reported yet.',
  });

  function changed() {
    Object.assign(filter, { site: site.value.trim(), stale: stale.value });
    keepFilters('gateways', filter);
    list.restart();
  }

  site.addEventListener('input', debounce(changed, 400));
  stale.addEventListener('change', changed);
  root.append(h('h1', {}, 'Gateways'),
    h('div', { class: 'filters' }, labelled('Site', site), labelled('Health', stale)),
    ...list.elements);
  await list.load();
  return { refresh: list.load, wants: () => false };
}
