// #/alerts: the alert queue a page at a time (GET /api/v1/alerts with state, severity,
// detector, device, sort, order and the Next-Cursor). New alerts appear through the live feed.
import { ALERT_STATES, SEVERITIES, badge, debounce, h, labelled, macLink, options, text, time } from './dom.js';
import { keepFilters, pagedTable, readFilters } from './list.js';

const PAGE_SIZE = 50;
const FILTERS = ['state', 'severity', 'detector', 'device', 'sort', 'order'];

// Where an alert's row leads (the whole row opens the alert; its id link is what the keyboard
// reaches).
export const alertHref = (a) => `#/alerts/${a.id}`;

export const ALERT_COLUMNS = [
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

export async function mount(root, ctx) {
  const filter = readFilters(ctx.query, FILTERS);
  const state = h('select', { testid: 'alert-filter-state' }, options(['', ...ALERT_STATES], filter.state));
  const severity = h('select', { testid: 'alert-filter-severity' }, options(['', ...SEVERITIES], filter.severity));
  const detector = h('input', { type: 'text', testid: 'alert-filter-detector', value: filter.detector,
    placeholder: 'scan, volume, ...' });
  const device = h('input', { type: 'text', class: 'mono', testid: 'alert-filter-device', value: filter.device,
    placeholder: 'MAC' });
  const sort = h('select', { testid: 'alert-sort' },
    options(['last_seen', 'first_seen', 'score', 'severity'], filter.sort || 'last_seen'));
  const order = h('select', { testid: 'alert-order' },
    options(['desc', 'asc'], filter.order || 'desc', { desc: 'newest / highest first', asc: 'oldest / lowest first' }));
  const list = pagedTable('/alerts', () => ({ ...filter, limit: PAGE_SIZE }), ALERT_COLUMNS, {
    testid: 'alert-table', rowTestid: 'alert-row', rowHref: alertHref,
    rowAttrs: (a) => ({ 'data-id': a.id, 'data-state': a.state, class: `row-${a.state}` }), empty: 'No alert matches.',
  });

  function changed() {
    Object.assign(filter, { state: state.value, severity: severity.value, detector: detector.value.trim(),
      device: device.value.trim(), sort: sort.value === 'last_seen' ? '' : sort.value,
      order: order.value === 'desc' ? '' : order.value });
    keepFilters('alerts', filter);
    list.restart();
  }

  for (const input of [detector, device]) input.addEventListener('input', debounce(changed, 400));
  for (const select of [state, severity, sort, order]) select.addEventListener('change', changed);
  root.append(h('h1', {}, 'Alerts'),
    h('div', { class: 'filters' }, labelled('State', state), labelled('Severity', severity),
      labelled('Detector', detector), labelled('Device', device), labelled('Sort', sort), labelled('Order', order)),
    ...list.elements);
  await list.load();
  return { refresh: list.load, wants: (kind) => kind === 'alert' };
}
