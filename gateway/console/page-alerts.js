// #/alerts: the alert queue a page at a time (GET /api/v1/alerts with state, severity,
// detector, device, sort, order and the Next-Cursor). New alerts appear through the live feed.
// At the fleet hub: one queue for every site, with site and gateway columns and filters,
// newest first.
import { fleet } from './api.js';
import { ALERT_STATES, SEVERITIES, badge, debounce, h, labelled, macLink, options, text, time } from './dom.js';
import { keepFilters, pagedTable, readFilters } from './list.js';

const PAGE_SIZE = 50;
const FILTERS = ['state', 'severity', 'detector', 'device', 'sort', 'order'];
const FLEET_FILTERS = ['state', 'severity', 'site', 'gateway', 'detector', 'device'];

// Where an alert's row leads (the whole row opens the alert; its id link is what the keyboard
// reaches).
export const alertHref = (a) => `#/alerts/${a.id}`;

const COLUMNS = [
  { label: 'severity', cell: (a) => badge('sev', a.severity) },
  { label: 'id', cell: (a) => h('a', { href: alertHref(a) }, `#${a.id}`) },
  { label: 'detector', cell: (a) => a.detector },
  { label: 'device', cell: (a) => macLink(a.device) },
  { label: 'observed', class: 'wrap', cell: (a) => a.observed },
  { label: 'count', class: 'num', cell: (a) => String(a.count) },
  { label: 'state', cell: (a) => badge('alert', a.state) },
  { label: 'assignee', cell: (a) => text(a.assignee) },
  { label: 'last seen', cell: (a) => time(a.last_seen) },
];

// The queue's columns: at the fleet hub, where each alert was raised too.
export function alertColumns() {
  if (!fleet()) return COLUMNS;
  const [severity, id, ...rest] = COLUMNS;
  return [severity, id, { label: 'site', cell: (a) => a.site }, { label: 'gateway', cell: (a) => a.gateway }, ...rest];
}

export async function mount(root, ctx) {
  const filter = readFilters(ctx.query, fleet() ? FLEET_FILTERS : FILTERS);
  const state = h('select', { testid: 'alert-filter-state' }, options(['', ...ALERT_STATES], filter.state));
  const severity = h('select', { testid: 'alert-filter-severity' }, options(['', ...SEVERITIES], filter.severity));
  const field = (name, placeholder, attrs = {}) => h('input', { type: 'text', testid: `alert-filter-${name}`,
    value: filter[name], placeholder, ...attrs });
  const detector = field('detector', 'scan, volume, ...');
  const device = field('device', 'MAC', { class: 'mono' });
  // The hub keeps its queue newest first only; a gateway sorts it.
  const sort = fleet() ? null : h('select', { testid: 'alert-sort' },
    options(['last_seen', 'first_seen', 'score', 'severity'], filter.sort || 'last_seen'));
  const order = fleet() ? null : h('select', { testid: 'alert-order' },
    options(['desc', 'asc'], filter.order || 'desc', { desc: 'newest / highest first', asc: 'oldest / lowest first' }));
  const site = fleet() ? field('site', 'site') : null;
  const gateway = fleet() ? field('gateway', 'gateway') : null;
  const list = pagedTable('/alerts', () => ({ ...filter, limit: PAGE_SIZE }), alertColumns(), {
    testid: 'alert-table', rowTestid: 'alert-row', rowHref: alertHref,
    rowAttrs: (a) => ({ 'data-id': a.id, 'data-state': a.state, class: `row-${a.state}` }), empty: 'No alert matches.',
  });

  function changed() {
    Object.assign(filter, { state: state.value, severity: severity.value, detector: detector.value.trim(),
      device: device.value.trim() });
    if (sort) Object.assign(filter, { sort: sort.value === 'last_seen' ? '' : sort.value, order: order.value === 'desc' ? '' : order.value });
    if (site) Object.assign(filter, { site: site.value.trim(), gateway: gateway.value.trim() });
    keepFilters('alerts', filter);
    list.restart();
  }

  for (const input of [detector, device, site, gateway].filter(Boolean)) input.addEventListener('input', debounce(changed, 400));
  for (const select of [state, severity, sort, order].filter(Boolean)) select.addEventListener('change', changed);
  root.append(h('h1', {}, fleet() ? 'Fleet alerts' : 'Alerts'),
    h('div', { class: 'filters' }, labelled('State', state), labelled('Severity', severity),
      site && labelled('Site', site), gateway && labelled('Gateway', gateway),
      labelled('Detector', detector), labelled('Device', device), sort && labelled('Sort', sort),
      order && labelled('Order', order)),
    ...list.elements);
  await list.load();
  return { refresh: list.load, wants: (kind) => kind === 'alert' };
}
