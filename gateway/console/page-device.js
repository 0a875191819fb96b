// #/devices/<mac>: one device: identity and certificate, type and fingerprints, firmware,
// policy and class, traffic over time, destinations, flows, baseline, alert history and audit,
// with the access actions for operators. Panels whose endpoint this gateway lacks (404) say so.
// At the fleet hub: the record of the gateway that saw it last, every gateway's view of it, its
// location history, alerts and the hub's audit (the hub keeps no traffic, flows nor baseline).
import { canAct, fleet, get, optional, send } from './api.js';
import { emptyChart, lineChart } from './chart.js';
import { alertHref } from './page-alerts.js';
import {
  badge, bytes, confirmAction, facts, fill, h, mono, notice, objectTable, percent, plain, section, table,
  text, time, unavailable,
} from './dom.js';

const TRAFFIC_WINDOW_MS = 24 * 3600 * 1000;
const LIST_LIMIT = 20;
const PROTOCOLS = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

// Which actions apply to a device in each access state.
function actionsFor(access) {
  return [
    ['quarantine', access !== 'quarantined' && access !== 'blocked'],
    ['block', access !== 'blocked'],
    ['release', access === 'quarantined' || access === 'blocked'],
  ].filter(([, applies]) => applies).map(([action]) => action);
}

export async function mount(root, ctx) {
  const mac = ctx.params[0];
  const path = `/devices/${encodeURIComponent(mac)}`;
  const page = h('div', { class: 'device-page', testid: 'device-page', 'data-mac': mac });
  root.append(page);

  async function act(action) {
    const answer = await confirmAction(`${action[0].toUpperCase()}${action.slice(1)} ${mac}?`, true);
    if (!answer) return;
    await send('POST', `${path}/${action}`, answer.reason ? { reason: answer.reason } : {}).catch(() => {});
    await load();
  }

  async function load() {
    let device;
    try {
      device = await get(path);
    } catch (failure) {
      fill(page, h('h1', { class: 'mono' }, mac), notice(failure.message));
      return;
    }
    if (fleet()) {
      const panels = await Promise.all([alertHistory(mac), audit(mac)]);
      fill(page, heading(device, act), h('div', { class: 'columns' },
        identity(device), classification(device), views(device)), locations(device), ...panels);
      return;
    }
    const panels = await Promise.all([
      traffic(path), destinations(path), flows(path), baseline(path), alertHistory(mac), audit(mac),
    ]);
    fill(page, heading(device, act), h('div', { class: 'columns' },
      identity(device), classification(device), enforcement(device)), ...panels);
  }

  await load();
  return {
    refresh: load,
    wants: (kind, data) => (kind === 'device' || kind === 'alert') && (!data || data.mac === mac || data.device === mac),
  };
}

function heading(device, act) {
  const actions = canAct() ? actionsFor(device.state).map((action) => h('button', {
    type: 'button', testid: `action-${action}`, class: action === 'release' ? '' : 'danger',
    onclick: () => act(action),
  }, action[0].toUpperCase() + action.slice(1))) : [];
  return h('div', { class: 'page-head' },
    h('h1', {}, mono(device.mac), ' ', badge('state', device.state)),
    h('div', { class: 'actions' }, actions));
}

function identity(d) {
  return section('Identity and certificate', {}, facts([
    ['MAC', mono(d.mac)], ['IP addresses', mono(d.ips.join(', '))], ['host name', text(d.hostname)],
    ['vendor', text(d.vendor)], ['device id', text(d.device_id)], ['certificate subject', text(d.cert_subject)],
    ['identity', text(d.lifecycle)], ['first seen', time(d.first_seen)], ['last seen', time(d.last_seen)],
  ]));
}

function classification(d) {
  return section('Type and firmware', {},
    facts([
      ['type', d.device_type ? `${d.device_type} (confidence ${percent(d.type_confidence)})` : 'not known yet'],
      ['firmware', text(d.firmware_version)],
      ['DNS names', d.dns_names.length ? d.dns_names.join(', ') : '—'],
    ]),
    table([
      { label: 'fingerprint', cell: (f) => f.kind },
      { label: 'value', class: 'mono wrap', cell: (f) => f.value },
    ], d.fingerprints, { empty: 'No fingerprint yet.' }));
}

function enforcement(d) {
  const e = d.enforcement;
  return section('Policy and traffic', {}, facts([
    ['class', text(d.policy)],
    ['enforced access', e ? badge('state', e.access) : 'none: on the onboarding lane'],
    ['policy id / class id', e ? `${e.policy_id} / ${e.class_id}` : '—'],
    ['release restores', text(d.restore_access)],
    ['sent', `${bytes(d.traffic.tx_bytes)} in ${d.traffic.tx_packets} packets`],
    ['received', `${bytes(d.traffic.rx_bytes)} in ${d.traffic.rx_packets} packets`],
    ['flows opened', String(d.flows_total)],
  ]));
}

// The fleet hub: where the device is now, and how each gateway that saw it has it.
function views(d) {
  return section('Gateways', { testid: 'device-views' },
    facts([['last seen at', `${d.site} / ${d.gateway}`]]),
    table([
      { label: 'site', cell: (v) => v.site },
      { label: 'gateway', cell: (v) => v.gateway },
      { label: 'state', cell: (v) => badge('state', v.state) },
      { label: 'last seen', cell: (v) => time(v.last_seen) },
    ], d.views, { rowTestid: 'device-view' }));
}

function locations(d) {
  return section('Location history', { testid: 'device-locations' }, table([
    { label: 'site', cell: (l) => l.site },
    { label: 'gateway', cell: (l) => l.gateway },
    { label: 'first seen', cell: (l) => time(l.first_seen) },
    { label: 'last seen', cell: (l) => time(l.last_seen) },
  ], d.locations, { rowTestid: 'device-location', empty: 'Seen nowhere yet.' }));
}

async function traffic(path) {
  const since = new Date(Date.now() - TRAFFIC_WINDOW_MS).toISOString();
  const samples = await optional(`${path}/traffic`, { since }).catch(() => undefined);
  const title = 'Traffic, last 24 hours';
  if (samples === null) return section(title, {}, unavailable('Traffic history', `${path}/traffic`));
  if (samples === undefined) return section(title, {}, notice('Traffic history could not be read.'));
  if (samples.length === 0) {
    return section(title, {}, emptyChart({ testid: 'traffic-chart', label: 'No traffic in the last 24 hours',
      since: Date.parse(since) }));
  }
  // Bytes per second of each sample, so samples of different lengths compare.
  const rate = (key) => samples.map((s) => [Date.parse(s.start), s[key] / Math.max(1, s.seconds)]);
  return section(title, {}, lineChart({
    testid: 'traffic-chart', label: 'Bytes per second sent and received', format: (v) => `${bytes(v)}/s`,
    series: [{ name: 'sent', cls: 'c-tx', points: rate('tx_bytes') }, { name: 'received', cls: 'c-rx', points: rate('rx_bytes') }],
  }));
}

async function destinations(path) {
  const rows = await optional(`${path}/destinations`).catch(() => undefined);
  const title = 'Destinations';
  if (rows === null) return section(title, {}, unavailable('The destination list', `${path}/destinations`));
  if (rows === undefined) return section(title, {}, notice('Destinations could not be read.'));
  return section(title, {}, table([
    { label: 'destination', class: 'mono', cell: (r) => `${r.dst}:${r.dst_port}` },
    { label: 'proto', cell: (r) => PROTOCOLS[r.proto] ?? String(r.proto) },
    { label: 'names', cell: (r) => (r.names?.length ? r.names.join(', ') : '—') },
    { label: 'flows', class: 'num', cell: (r) => String(r.flows) },
    { label: 'bytes', class: 'num', cell: (r) => bytes(r.bytes) },
    { label: 'last seen', cell: (r) => time(r.last_seen) },
    { label: 'verdict', cell: (r) => badge('verdict', r.verdict) },
  ], rows, { empty: 'No destination yet.' }));
}

async function flows(path) {
  const rows = await get(`${path}/flows`, { limit: LIST_LIMIT }).catch(() => []);
  return section(`Latest flows (${LIST_LIMIT} at most)`, {}, table([
    { label: 'time', cell: (f) => time(f.time) },
    { label: 'proto', cell: (f) => PROTOCOLS[f.proto] ?? String(f.proto) },
    { label: 'from', class: 'mono', cell: (f) => `${f.src}:${f.src_port}` },
    { label: 'to', class: 'mono', cell: (f) => `${f.dst}:${f.dst_port}` },
    { label: 'verdict', cell: (f) => badge('verdict', f.verdict) },
    { label: 'reason', cell: (f) => f.reason },
  ], rows, { empty: 'No flow recorded.' }));
}

async function baseline(path) {
  const base = await optional(`${path}/baseline`).catch(() => undefined);
  const title = 'Baseline';
  if (base === null) return section(title, {}, unavailable('The baseline', `${path}/baseline`));
  if (base === undefined) return section(title, {}, notice('The baseline could not be read.'));
  const profile = Object.entries(base.profile ?? {}).map(([key, value]) => [key.replaceAll('_', ' '), plain(value)]);
  const learned = base.learned ?? [];
  return section(title, {},
    facts([['state', badge('baseline', base.state)], ['class', text(base.class)], ['updated', time(base.updated_at)],
      ...profile]),
    h('h3', {}, 'Learnt as normal by analysts'),
    learned.length && typeof learned[0] === 'object'
      ? objectTable(learned) : (learned.length ? h('p', {}, learned.join(', ')) : notice('Nothing.')));
}

async function alertHistory(mac) {
  const rows = await get('/alerts', { device: mac, limit: LIST_LIMIT }).catch(() => []);
  return section('Alerts', { testid: 'device-alerts' }, table([
    { label: 'id', cell: (a) => h('a', { href: alertHref(a) }, `#${a.id}`) },
    { label: 'severity', cell: (a) => badge('sev', a.severity) },
    { label: 'detector', cell: (a) => a.detector },
    { label: 'observed', cell: (a) => a.observed },
    { label: 'state', cell: (a) => badge('alert', a.state) },
    { label: 'last seen', cell: (a) => time(a.last_seen) },
  ], rows, { rowHref: alertHref, empty: 'No alert for this device.' }));
}

async function audit(mac) {
  const rows = await get('/audit', { device: mac, limit: LIST_LIMIT }).catch(() => []);
  return section('Audit', { testid: 'device-audit' }, table([
    { label: 'time', cell: (e) => time(e.time) },
    { label: 'actor', class: 'mono', cell: (e) => e.actor },
    { label: 'action', cell: (e) => e.action },
    { label: 'detail', class: 'wrap', cell: (e) => e.detail },
  ], rows, { empty: 'No audit entry.' }));
}
