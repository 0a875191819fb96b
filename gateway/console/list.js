// The list pages' shared parts: a table read a page at a time (keyset paging with the API's
// Next-Cursor, so a list of 100,000 devices is never loaded whole) and filters kept in the
// URL, so a reload or a shared link shows the same list.
import { call } from './api.js';
import { h, notice, table } from './dom.js';

// A table of `path` a page at a time: `params()` gives the filters, `columns` and `options`
// are those of dom.js's table(). Returns {elements, load (the page shown), restart (page one)}.
export function pagedTable(path, params, columns, options) {
  const before = [];
  let cursor = null;
  let next = null;
  const list = h('div', { class: 'list' });
  const prev = h('button', { type: 'button', testid: 'prev-page', disabled: true,
    onclick: () => { cursor = before.pop() ?? null; load(); } }, '← Previous');
  const forward = h('button', { type: 'button', testid: 'next-page', disabled: true,
    onclick: () => { before.push(cursor); cursor = next; load(); } }, 'Next →');
  const label = h('span', { class: 'page-label' });

  async function load() {
    let page;
    try {
      page = await call(path, { params: { ...params(), cursor } });
    } catch (failure) {
      list.replaceChildren(notice(failure.message));
      return;
    }
    const { data, next: following } = page;
    list.replaceChildren(table(columns, data, options));
    next = following;
    prev.disabled = before.length === 0;
    forward.disabled = !next;
    label.textContent = `Page ${before.length + 1}, ${data.length} shown`;
  }

  return {
    elements: [list, h('div', { class: 'pager' }, prev, label, forward)],
    load,
    restart() {
      before.length = 0;
      cursor = null;
      return load();
    },
  };
}

// The filters named `keys` from the route's query (empty when absent).
export function readFilters(query, keys) {
  return Object.fromEntries(keys.map((key) => [key, query.get(key) ?? '']));
}

// Writes the filters set into the URL of `route` without adding a history entry.
export function keepFilters(route, filter) {
  const kept = new URLSearchParams(Object.entries(filter).filter(([, value]) => value));
  history.replaceState(null, '', `#/${route}${kept.size ? `?${kept}` : ''}`);
}
