// Building blocks every page uses: elements from data (createElement and textContent only, so
// text from devices can never become markup), tables, formatting, the error banner and the
// confirmation dialog.

// h('a', {href: '#/x', testid: 'nav'}, 'text', child, [more]) -> element. Attributes set to
// null, undefined or false are left out; `on<event>` attributes add listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  return append(el, children);
}

// Replaces what `el` holds with `children` (as h() takes them: nested arrays, null left out).
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const dash = '—';

export function text(value) {
  return value === null || value === undefined || value === '' ? dash : String(value);
}

export function mono(value) {
  return h('span', { class: 'mono' }, text(value));
}

export function time(iso) {
  if (!iso) return dash;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, '0');
  const label = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return h('time', { datetime: iso, title: iso }, label);
}

export function bytes(n) {
  if (n === null || n === undefined) return dash;
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = Number(n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function percent(fraction) {
  return fraction === null || fraction === undefined ? dash : `${Math.round(fraction * 100)} %`;
}

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];
export const DEVICE_STATES = ['unknown', 'onboarding', 'enrolled', 'quarantined', 'blocked'];
export const ALERT_STATES = ['open', 'acknowledged', 'resolved'];
export const RESOLUTIONS = ['true_positive', 'false_positive', 'benign'];

// Colour always comes with the word, never alone.
export function badge(kind, value) {
  return h('span', { class: `badge ${kind}-${String(value).replace(/[^a-z_]/g, '')}` }, text(value));
}

export function macLink(mac) {
  if (!mac) return dash;
  return h('a', { class: 'mono', href: `#/devices/${encodeURIComponent(mac)}` }, mac);
}

// columns: [{label, cell: (row) => node or text, class}]; options: testid, rowTestid,
// rowAttrs(row) -> extra attributes, rowHref(row) -> where a click on the row leads, empty
// (text when there are no rows), caption.
export function table(columns, rows, options = {}) {
  const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)));
  const body = rows.map((row) => {
    const attrs = options.rowAttrs?.(row) ?? {};
    const href = options.rowHref?.(row);
    const classes = [attrs.class, href ? 'link-row' : null].filter(Boolean).join(' ');
    return h('tr', { testid: options.rowTestid, ...attrs, class: classes || null,
      onclick: href ? (event) => openRow(event, href) : null },
    columns.map((c) => h('td', { class: c.class }, c.cell(row))));
  });
  if (rows.length === 0) {
    body.push(h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, options.empty ?? 'Nothing to show.')));
  }
  return h('table', { testid: options.testid, class: 'grid' },
    options.caption ? h('caption', {}, options.caption) : null, h('thead', {}, head), h('tbody', {}, body));
}

// A click on a row opens `href`, unless it was on a control of its own (the row's link stays
// what the keyboard reaches), with a modifier key, or the end of selecting text to copy.
function openRow(event, href) {
  if (event.target.closest('a, button, input, select, textarea, label, summary')) return;
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  if (String(window.getSelection() ?? '') !== '') return;
  location.hash = href;
}

// A table of `objects` whose columns are their keys (for shapes this console does not know).
export function objectTable(objects, options = {}) {
  const keys = [...new Set(objects.flatMap((o) => Object.keys(o)))];
  const columns = keys.map((key) => ({ label: key.replaceAll('_', ' '), cell: (o) => plain(o[key]) }));
  return table(columns, objects, options);
}

export function plain(value) {
  if (value === null || value === undefined) return dash;
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : v)).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

// pairs: [[label, value]] -> <dl>; pairs with an undefined value are left out.
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== undefined)
    .map(([label, value]) => [h('dt', {}, label), h('dd', {}, value === null || value === '' ? dash : value)]));
}

export function section(title, attrs, ...children) {
  return h('section', { class: 'panel', ...attrs }, h('h2', {}, title), children);
}

export function notice(message) {
  return h('p', { class: 'notice' }, message);
}

export function unavailable(what, path) {
  return notice(`${what} is not available on this gateway: /api/v1${decodeURIComponent(path)} answered 404.`);
}

// A bar whose width says how big `value` is beside `max` (set through the CSSOM, which the
// content security policy allows, unlike style attributes).
export function bar(value, max) {
  const fill = h('span', { class: 'bar-fill' });
  fill.style.width = `${max > 0 ? Math.round((value / max) * 100) : 0}%`;
  return h('span', { class: 'bar', 'aria-hidden': 'true' }, fill);
}

// {name: count} -> a table of names, counts and bars, biggest first unless `order` is given.
export function countTable(counts, options = {}) {
  const entries = options.order
    ? options.order.filter((k) => k in counts).map((k) => [k, counts[k]])
    : Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const max = Math.max(0, ...entries.map(([, n]) => n));
  return table([
    { label: options.label ?? 'name', cell: ([name]) => (options.badge ? badge(options.badge, name) : name) },
    { label: 'count', class: 'num', cell: ([, n]) => String(n) },
    { label: '', class: 'bar-cell', cell: ([, n]) => bar(n, max) },
  ], entries, { testid: options.testid, empty: options.empty });
}

const banner = () => document.getElementById('error-banner');

export function showError(message) {
  document.getElementById('error-text').textContent = message;
  banner().hidden = false;
}

export function clearError() {
  banner().hidden = true;
  document.getElementById('error-text').textContent = '';
}

// Asks before an action; resolves to {reason} when confirmed, null when not. `withReason` adds
// a free-text reason field.
export function confirmAction(message, withReason = false) {
  const dialog = document.getElementById('confirm-dialog');
  const reason = document.getElementById('confirm-reason');
  document.getElementById('confirm-text').textContent = message;
  document.getElementById('confirm-reason-label').hidden = !withReason;
  reason.value = '';
  return new Promise((resolve) => {
    const yes = document.getElementById('confirm-yes');
    const no = document.getElementById('confirm-no');
    const done = (answer) => {
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      dialog.removeEventListener('cancel', onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done({ reason: reason.value.trim() });
    const onNo = (event) => { event.preventDefault(); done(null); };
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
    dialog.addEventListener('cancel', onNo);
    dialog.showModal();
    (withReason ? reason : no).focus();
  });
}

// Select options from values; `current` is selected.
export function options(values, current, labels = {}) {
  return values.map((v) => h('option', { value: v, selected: v === current }, labels[v] ?? (v === '' ? 'any' : v)));
}

export function labelled(label, control) {
  return h('label', { class: 'field' }, h('span', {}, label), control);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
