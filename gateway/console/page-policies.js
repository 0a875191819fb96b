// #/policies: the policy in force (GET /api/v1/policies): its files and version, when it was
// last loaded and what the last refused reload said, its classes and rules; any other list the
// gateway reports (lanes, ...) is shown as a plain table.
import { get } from './api.js';
import { facts, fill, h, notice, objectTable, section, table, text, time } from './dom.js';

const KNOWN = ['version', 'loaded_at', 'last_refused', 'files', 'classes'];

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
    fill(page,
      policy.last_refused
        ? h('div', { class: 'warning', role: 'status' }, h('strong', {}, 'The last reload was refused; '
          + 'the previous policy still runs: '), policy.last_refused)
        : null,
      section('In force', {}, facts([
        ['version', h('span', { class: 'mono' }, text(policy.version))], ['loaded', time(policy.loaded_at)],
        ['last refused reload', text(policy.last_refused)],
        ['files', policy.files.length ? h('ul', { class: 'mono plain-list' }, policy.files.map((f) => h('li', {}, f))) : '—'],
      ])),
      section('Classes', {}, table([
        { label: 'class', cell: (c) => c.name },
        { label: 'policy id', class: 'num', cell: (c) => String(c.policy_id) },
        { label: 'matches', cell: (c) => c.matches.join('; ') || '—' },
        { label: 'allow rules', class: 'num', cell: (c) => String(c.rules) },
      ], policy.classes, { testid: 'policy-classes', empty: 'No class: every device stays on its lane.' })),
      extra.map(([key, rows]) => section(key.replaceAll('_', ' '), {}, objectTable(rows))));
  }

  await load();
  return { refresh: load, wants: () => false };
}
