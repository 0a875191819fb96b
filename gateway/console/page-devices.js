// #/devices: the inventory a page at a time (GET /api/v1/devices with q, state, type, class,
// sort and the Next-Cursor), never all of it. Filters live in the URL, so a reload or a link
// shows the same list.
import { get } from './api.js';
import { DEVICE_STATES, badge, bytes, debounce, h, labelled, macLink, options, percent, text, time } from './dom.js';
import { keepFilters, pagedTable, readFilters } from './list.js';

const PAGE_SIZE = 50;
const SORTS = ['last_seen', 'first_seen', 'mac', 'vendor', 'type'];
const FILTERS = ['q', 'state', 'type', 'class', 'sort'];

const COLUMNS = [
  { label: 'MAC', cell: (d) => macLink(d.mac) },
  { label: 'IP', class: 'mono', cell: (d) => d.ips.join(', ') || '—' },
  { label: 'vendor', cell: (d) => text(d.vendor) },
  { label: 'type', cell: (d) => (d.device_type ? `${d.device_type} (${percent(d.type_confidence)})` : '—') },
  { label: 'class', cell: (d) => text(d.policy) },
  { label: 'state', cell: (d) => badge('state', d.state) },
  { label: 'last seen', cell: (d) => time(d.last_seen) },
  { label: 'traffic', class: 'num', cell: (d) => bytes(d.bytes) },
];

export async function mount(root, ctx) {
  const filter = readFilters(ctx.query, FILTERS);
  const search = h('input', { type: 'search', testid: 'device-search', value: filter.q,
    placeholder: 'MAC, IP or host name', 'aria-label': 'Search devices' });
  const state = h('select', { testid: 'device-filter-state' }, options(['', ...DEVICE_STATES], filter.state));
  const type = h('select', { testid: 'device-filter-type' }, options([''], filter.type));
  const cls = h('select', { testid: 'device-filter-class' }, options([''], filter.class));
  const sort = h('select', { testid: 'device-sort' }, options(SORTS, filter.sort || 'last_seen'));
  const list = pagedTable('/devices', () => ({ ...filter, limit: PAGE_SIZE }), COLUMNS, {
    testid: 'device-table', rowTestid: 'device-row', rowAttrs: (d) => ({ 'data-mac': d.mac }),
    rowHref: (d) => `#/devices/${encodeURIComponent(d.mac)}`, empty: 'No device matches.',
  });

  function changed() {
    Object.assign(filter, { q: search.value.trim(), state: state.value, type: type.value, class: cls.value,
      sort: sort.value === 'last_seen' ? '' : sort.value });
    keepFilters('devices', filter);
    list.restart();
  }

  search.addEventListener('input', debounce(changed, 300));
  for (const select of [state, type, cls, sort]) select.addEventListener('change', changed);
  root.append(h('h1', {}, 'Devices'),
    h('div', { class: 'filters' }, labelled('Search', search), labelled('State', state), labelled('Type', type),
      labelled('Class', cls), labelled('Sort', sort)),
    ...list.elements);
  // The type and class choices are the names in use, from the overview's counts.
  const choices = (counts, chosen) => options(['', ...new Set([...Object.keys(counts).sort(), chosen].filter(Boolean))], chosen);
  get('/summary').then((summary) => {
    type.replaceChildren(...choices(summary.by_type, filter.type));
    cls.replaceChildren(...choices(summary.by_class, filter.class));
  }).catch(() => {});
  await list.load();
  return { refresh: list.load, wants: (kind) => kind === 'device' };
}
