// #/devices: the inventory a page at a time (GET /api/v1/devices with q, state, type, class,
// sort and the Next-Cursor), never all of it. Filters live in the URL, so a reload or a link
// shows the same list. At the fleet hub: every site's devices, with site and gateway columns
// and filters, newest first (the hub sorts by last seen only and keeps no classes).
import { fleet, get } from './api.js';
import { DEVICE_STATES, badge, bytes, debounce, h, labelled, macLink, options, percent, text, time } from './dom.js';
import { keepFilters, pagedTable, readFilters } from './list.js';

const PAGE_SIZE = 50;
const SORTS = ['last_seen', 'first_seen', 'mac', 'vendor', 'type'];
const FILTERS = ['q', 'state', 'type', 'class', 'sort'];
const FLEET_FILTERS = ['q', 'state', 'type', 'site', 'gateway'];

const PLACE_COLUMNS = [
  { label: 'site', cell: (d) => d.site },
  { label: 'gateway', cell: (d) => d.gateway },
];

const COLUMNS = [
  { label: 'MAC', cell: (d) => macLink(d.mac) },
  { label: 'IP', class: 'mono', cell: (d) => d.ips.join(', ') || '—' },
  { label: 'vendor', cell: (d) => text(d.vendor) },
  { label: 'type', cell: (d) => guess(d.device_type, d.type_confidence) },
  { label: 'generic type', cell: (d) => guess(d.generic_type, d.generic_confidence) },
  { label: 'class', cell: (d) => text(d.policy) },
  { label: 'state', cell: (d) => badge('state', d.state) },
  { label: 'last seen', cell: (d) => time(d.last_seen) },
  { label: 'traffic', class: 'num', cell: (d) => bytes(d.bytes) },
];

// A level of the classifier's guess (product, generic type) with its confidence.
function guess(name, confidence) {
  return name ? `${name} (${percent(confidence)})` : '—';
}

export async function mount(root, ctx) {
  return fleet() ? mountFleet(root, ctx) : mountGateway(root, ctx);
}

function deviceTable(filter, columns) {
  return pagedTable('/devices', () => ({ ...filter, limit: PAGE_SIZE }), columns, {
    testid: 'device-table', rowTestid: 'device-row', rowAttrs: (d) => ({ 'data-mac': d.mac }),
    rowHref: (d) => `#/devices/${encodeURIComponent(d.mac)}`, empty: 'No device matches.',
  });
}

function searchBox(filter, placeholder) {
  return h('input', { type: 'search', testid: 'device-search', value: filter.q, placeholder,
    'aria-label': 'Search devices' });
}

async function mountGateway(root, ctx) {
  const filter = readFilters(ctx.query, FILTERS);
  const search = searchBox(filter, 'MAC, IP or host name');
  const state = h('select', { testid: 'device-filter-state' }, options(['', ...DEVICE_STATES], filter.state));
  const type = h('select', { testid: 'device-filter-type' }, options([''], filter.type));
  const cls = h('select', { testid: 'device-filter-class' }, options([''], filter.class));
  const sort = h('select', { testid: 'device-sort' }, options(SORTS, filter.sort || 'last_seen'));
  const list = deviceTable(filter, COLUMNS);

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

async function mountFleet(root, ctx) {
  const filter = readFilters(ctx.query, FLEET_FILTERS);
  const search = searchBox(filter, 'MAC, host name, vendor or type');
  const state = h('select', { testid: 'device-filter-state' }, options(['', ...DEVICE_STATES], filter.state));
  const field = (testid, value, placeholder) => h('input', { type: 'text', testid, value, placeholder });
  const type = field('device-filter-type', filter.type, 'ip-camera, Axis, ...');
  const site = field('device-filter-site', filter.site, 'site');
  const gateway = field('device-filter-gateway', filter.gateway, 'gateway');
  const [mac, ...rest] = COLUMNS;
  const list = deviceTable(filter, [mac, ...PLACE_COLUMNS, ...rest]);

  function changed() {
    Object.assign(filter, { q: search.value.trim(), state: state.value, type: type.value.trim(),
      site: site.value.trim(), gateway: gateway.value.trim() });
    keepFilters('devices', filter);
    list.restart();
  }

  for (const input of [search, type, site, gateway]) input.addEventListener('input', debounce(changed, 300));
  state.addEventListener('change', changed);
  root.append(h('h1', {}, 'Fleet devices'),
    h('div', { class: 'filters' }, labelled('Search', search), labelled('State', state), labelled('Type', type),
      labelled('Site', site), labelled('Gateway', gateway)),
    ...list.elements);
  await list.load();
  return { refresh: list.load, wants: () => false };
}
