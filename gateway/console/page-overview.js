// #/overview: devices by state, type and class (GET /api/v1/summary), open alerts by severity
// and alerts over the last day (GET /api/v1/alerts/summary), and the latest open alerts. At the
// fleet hub: gateways (live and stale), devices by state and open alerts from its status.
import { fleet, get, optional } from './api.js';
import { emptyChart, stackedBars } from './chart.js';
import { DEVICE_STATES, SEVERITIES, countTable, facts, fill, h, notice, section, table, unavailable } from './dom.js';
import { alertColumns, alertHref } from './page-alerts.js';

const WINDOW_MS = 24 * 3600 * 1000;
const BUCKET_SECS = 3600;
const LATEST = 10;

export async function mount(root) {
  const page = h('div', { class: 'overview', testid: 'overview' });
  root.append(h('h1', {}, 'Overview'), page);

  async function load() {
    const since = new Date(Date.now() - WINDOW_MS).toISOString();
    if (fleet()) {
      await loadFleet(page);
      return;
    }
    const [devices, alerts, latest] = await Promise.all([
      get('/summary').catch(() => null),
      optional('/alerts/summary', { since, bucket_secs: BUCKET_SECS }).catch(() => undefined),
      get('/alerts', { state: 'open', limit: LATEST }).catch(() => []),
    ]);
    fill(page,
      h('div', { class: 'columns' },
        devices ? deviceCounts(devices) : section('Devices', {}, notice('Device counts could not be read.')),
        alertCounts(alerts, since)),
      latestAlerts(latest));
  }

  await load();
  return { refresh: load, wants: (kind) => kind === 'alert' || kind === 'device' };
}

function latestAlerts(latest) {
  return section('Latest open alerts', {}, table(alertColumns(), latest, { rowHref: alertHref, empty: 'No open alert.' }),
    h('p', {}, h('a', { href: '#/alerts?state=open' }, 'All open alerts')));
}

async function loadFleet(page) {
  const [status, latest] = await Promise.all([
    get('/status').catch(() => null),
    get('/alerts', { state: 'open', limit: LATEST }).catch(() => []),
  ]);
  if (!status) {
    fill(page, notice('The fleet status could not be read.'));
    return;
  }
  const total = Object.values(status.devices).reduce((sum, n) => sum + n, 0);
  fill(page,
    h('div', { class: 'columns' },
      section(`Gateways: ${status.gateways}`, { testid: 'fleet-gateways' }, facts([
        ['reporting', String(status.gateways - status.stale_gateways)],
        ['stale', h('a', { href: '#/gateways?stale=true' }, String(status.stale_gateways))],
        ['open alerts', h('a', { href: '#/alerts?state=open' }, String(status.open_alerts))],
        // Whether the hub keeps up: reports waiting for it, and how old the last stored one was.
        ['waiting for the hub', `${status.ingest.pending} reports`],
        ['ingest lag', `${(status.ingest.lag_ms / 1000).toFixed(1)} s`],
      ])),
      section(`Devices: ${total}`, {}, h('h3', {}, 'By state'),
        countTable(status.devices, { testid: 'devices-by-state', label: 'state', badge: 'state', order: DEVICE_STATES }))),
    latestAlerts(latest));
}

function deviceCounts(summary) {
  const other = (counts, key, n) => (n ? { ...counts, [key]: n } : counts);
  return [
    section(`Devices: ${summary.total}`, {},
      h('h3', {}, 'By state'),
      countTable(summary.by_state, { testid: 'devices-by-state', label: 'state', badge: 'state', order: DEVICE_STATES }),
      h('h3', {}, 'By type'),
      countTable(other(summary.by_type, 'not known yet', summary.untyped), { testid: 'devices-by-type', label: 'type' }),
      h('h3', {}, 'By class'),
      countTable(other(summary.by_class, 'no class', summary.unclassified), { testid: 'devices-by-class', label: 'class' })),
  ];
}

function alertCounts(summary, since) {
  const title = 'Alerts';
  if (summary === null) return section(title, {}, unavailable('The alert summary', '/alerts/summary'));
  if (summary === undefined) return section(title, {}, notice('The alert summary could not be read.'));
  const buckets = summary.over_time.map((b) => ({ start: Date.parse(b.start), values: b }));
  const severityClass = (severity) => `c-${severity}`;
  return section(title, {},
    h('h3', {}, 'Open, by severity'),
    countTable(summary.open_by_severity, { testid: 'open-alerts-by-severity', label: 'severity', badge: 'sev',
      order: SEVERITIES }),
    h('h3', {}, 'By state'),
    countTable(summary.by_state, { testid: 'alerts-by-state', label: 'state', badge: 'alert' }),
    h('h3', {}, 'Raised in the last 24 hours, per hour'),
    buckets.length
      ? stackedBars({ testid: 'alerts-over-time', label: 'Alerts per hour by severity', buckets,
        keys: [...SEVERITIES].reverse(), cls: severityClass, bucketMs: BUCKET_SECS * 1000, format: String })
      : emptyChart({ testid: 'alerts-over-time', label: 'No alert in the last 24 hours', since: Date.parse(since) }));
}
