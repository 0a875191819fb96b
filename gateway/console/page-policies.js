// #/policies: the policy in force (GET /api/v1/policies): its files and version, when it was
// last loaded and what the last refused reload said; the default verdicts; the lanes and the
// classes with their allow rules, each with the file and line it is written at; the response
// rules. Any other list the gateway reports is shown as a plain table.
import { get } from './api.js';
import { badge, dash, facts, fill, h, notice, objectTable, section, table, text, time } from './dom.js';

const KNOWN = ['version', 'loaded_at', 'last_refused', 'files', 'classes', 'lanes', 'responses'];
const VERDICTS = [
  ['malformed', 'frames that cannot be parsed'],
  ['unknown_device', 'unknown and onboarding devices outside the onboarding lane'],
  ['policy_miss', 'enrolled devices outside their class'],
  ['quarantine', 'quarantined devices outside the quarantine lane'],
];
const LANES = {
  onboarding: 'unknown and onboarding devices',
  quarantine: 'quarantined devices',
  update: 'added to the quarantine lane and to classes that ask for it',
};

// `/etc/iotgw/policies/camera.toml:12:1` shown as `camera.toml:12`, the whole path on hover.
function where(at) {
  if (!at) return dash;
  const short = at.split('/').pop().replace(/:\d+$/, '');
  return h('span', { class: 'mono', title: at }, short);
}

function ports(rule) {
  const ranges = rule.ports ?? [];
  if (ranges.length === 0 || (ranges.length === 1 && ranges[0].first === 0 && ranges[0].last === 65535)) {
    return 'all';
  }
  return ranges.map((r) => (r.first === r.last ? String(r.first) : `${r.first}-${r.last}`)).join(', ');
}

function rulesTable(rules, empty) {
  return table([
    { label: 'nets', class: 'mono wrap', cell: (r) => r.nets.join(', ') || dash },
    { label: 'protocol', cell: (r) => r.protocol },
    { label: 'ports', class: 'mono', cell: (r) => (r.protocol === 'tcp' || r.protocol === 'udp' ? ports(r) : dash) },
    { label: 'names', class: 'mono wrap', cell: (r) => r.names.join(', ') || dash },
    { label: 'direction', cell: (r) => r.direction },
    { label: 'rule', class: 'wrap', cell: (r) => text(r.description) },
    { label: 'where', cell: (r) => where(r.at) },
  ], rules, { rowTestid: 'policy-rule', empty });
}

function lanes(policy) {
  const shown = policy.lanes ?? [];
  if (shown.length === 0) return notice('This gateway does not report its lanes.');
  return shown.map((lane) => h('div', { class: 'policy-part', 'data-lane': lane.name },
    h('h3', {}, `${lane.name} lane`),
    facts([
      ['for', LANES[lane.name] ?? dash],
      ['description', lane.description || undefined],
      ['also', lane.includes_update ? 'the update lane\'s rules' : undefined],
      ['written at', lane.at ? where(lane.at) : 'no file defines it'],
    ]),
    rulesTable(lane.allow, 'No rule: this lane allows nothing.')));
}

function classes(policy) {
  const summary = table([
    { label: 'class', cell: (c) => c.name },
    { label: 'policy id', class: 'num', cell: (c) => String(c.policy_id) },
    { label: 'matches', cell: (c) => c.matches.join('; ') || dash },
    { label: 'allow rules', class: 'num', cell: (c) => String(c.rules) },
    { label: 'where', cell: (c) => where(c.at) },
  ], policy.classes, { empty: 'No class: every device stays on its lane.' });
  return [summary, policy.classes.map((c) => {
    const also = [...(c.include ?? []).map((name) => `the rules of ${name}`),
      c.update_lane ? 'the update lane\'s rules' : null].filter(Boolean);
    return h('div', { class: 'policy-part', 'data-class': c.name },
      h('h3', {}, `class ${c.name}`),
      facts([
        ['description', c.description || undefined],
        ['also', also.length ? also.join('; ') : undefined],
      ]),
      c.allow ? rulesTable(c.allow, 'No rule of its own.') : null);
  })];
}

function responses(policy) {
  const limit = (n, secs) => `${n} per ${secs} s`;
  return table([
    { label: 'name', cell: (r) => r.name },
    { label: 'detectors', cell: (r) => r.detectors.join(', ') || 'every detector' },
    { label: 'min score', class: 'num', cell: (r) => String(r.min_score) },
    { label: 'action', cell: (r) => r.action },
    { label: 'per device', cell: (r) => limit(r.max_per_device, r.device_period_secs) },
    { label: 'overall', cell: (r) => limit(r.max_global, r.global_period_secs) },
    { label: 'exempt', class: 'wrap', cell: (r) => [...r.exempt_macs, ...r.exempt_classes].join(', ') || dash },
    { label: 'where', cell: (r) => where(r.at) },
  ], policy.responses ?? [], { rowTestid: 'policy-response', empty: 'No response rule: detections only alert.' });
}

export async function mount(root) {
  const page = h('div', { class: 'policies', testid: 'policies' });
  root.append(h('h1', {}, 'Policies'), page);

  async function load() {
    let policy;
    try {
      policy = await get('/policies');
    } catch (failure) {
      fill(page, notice(failure.message));
      return;
    }
    const extra = Object.entries(policy).filter(([key, value]) => !KNOWN.includes(key)
      && Array.isArray(value) && value.length && typeof value[0] === 'object');
    const reload = policy.last_reload;
    fill(page,
      policy.last_refused
        ? h('div', { class: 'warning', role: 'status' }, h('strong', {}, 'The last reload was refused; '
          + 'the previous policy still runs: '), policy.last_refused)
        : null,
      section('In force', {}, facts([
        ['version', h('span', { class: 'mono' }, text(policy.version))], ['loaded', time(policy.loaded_at)],
        ['last reload', reload ? [time(reload.at), reload.accepted ? ' accepted' : ' refused'] : dash],
        ['last refused reload', policy.last_refused_at ? [time(policy.last_refused_at), ': ', policy.last_refused]
          : text(policy.last_refused)],
        ['files', policy.files.length ? h('ul', { class: 'mono plain-list' }, policy.files.map((f) => h('li', {}, f))) : dash],
      ])),
      policy.verdicts ? section('Default verdicts', { testid: 'policy-verdicts' }, table([
        { label: 'traffic', cell: ([, what]) => what },
        { label: 'verdict', cell: ([key]) => badge('verdict', policy.verdicts[key]) },
      ], VERDICTS)) : null,
      section('Lanes', { testid: 'policy-lanes' }, lanes(policy)),
      section('Classes', { testid: 'policy-classes' }, classes(policy)),
      section('Response rules', { testid: 'policy-responses' }, responses(policy)),
      extra.map(([key, rows]) => section(key.replaceAll('_', ' '), {}, objectTable(rows))));
  }

  await load();
  return { refresh: load, wants: () => false };
}
