// #/alerts/<id>: one alert, its evidence, the responses it triggered and its notes, and for
// operators the work on it: acknowledge, resolve with a resolution, reopen, assign, note, and
// learn (or unlearn) a false positive as normal.
import { canAct, get, send } from './api.js';
import {
  RESOLUTIONS, badge, confirmAction, facts, fill, h, labelled, macLink, notice, section, table, text, time,
} from './dom.js';

export async function mount(root, ctx) {
  const id = ctx.params[0];
  const path = `/alerts/${id}`;
  const page = h('div', { class: 'alert-page', testid: 'alert-page', 'data-id': id });
  // Kept across refreshes, so a live update does not wipe what the analyst is typing.
  const assignee = h('input', { type: 'text', testid: 'alert-assignee', maxlength: 64 });
  const note = h('textarea', { testid: 'alert-note', rows: 2, maxlength: 512 });
  const resolution = h('select', { testid: 'alert-resolution', 'aria-label': 'Resolution' },
    RESOLUTIONS.map((r) => h('option', { value: r }, r.replaceAll('_', ' '))));
  root.append(page);

  // Runs `request` after the analyst confirmed `question` (text, or a function making it; none
  // for assignments and notes), then redraws.
  async function work(question, request) {
    const asked = typeof question === 'function' ? question() : question;
    if (asked && !(await confirmAction(asked))) return;
    await request().catch(() => {});
    await load();
  }
  const change = (body) => () => send('PATCH', path, body);

  function actions(alert) {
    const buttons = [];
    const button = (testid, label, question, request) => buttons.push(h('button', {
      type: 'button', testid, onclick: () => work(question, request),
    }, label));
    if (alert.state === 'open') {
      button('alert-ack', 'Acknowledge', `Acknowledge alert #${id}?`, change({ state: 'acknowledged' }));
    }
    if (alert.state !== 'resolved') {
      buttons.push(resolution);
      button('alert-resolve', 'Resolve', () => `Resolve alert #${id} as ${resolution.value.replaceAll('_', ' ')}?`,
        () => send('PATCH', path, { state: 'resolved', resolution: resolution.value }));
    } else {
      button('alert-reopen', 'Reopen', `Reopen alert #${id}?`, change({ state: 'open' }));
    }
    if (alert.learned) {
      button('alert-unlearn', 'Unlearn', `Stop treating what alert #${id} saw as normal for this device?`,
        () => send('DELETE', `${path}/learn`));
    } else if (alert.learned !== undefined && alert.state === 'resolved' && alert.resolution === 'false_positive') {
      button('alert-learn', 'Learn as normal', `Learn what alert #${id} saw as normal for this device? `
        + 'The same observation will no longer raise an alert.', () => send('POST', `${path}/learn`));
    }
    const addNote = () => note.value.trim() && work(null, async () => {
      await send('PATCH', path, { note: note.value.trim() });
      note.value = '';
    });
    return h('div', { class: 'work' },
      h('div', { class: 'actions' }, buttons),
      h('div', { class: 'actions' }, labelled('Assignee', assignee), h('button', {
        type: 'button', testid: 'alert-assign', onclick: () => work(null, change({ assignee: assignee.value.trim() })),
      }, 'Assign')),
      h('div', { class: 'actions' }, labelled('Note', note), h('button', { type: 'button', testid: 'alert-add-note', onclick: addNote },
        'Add note')));
  }

  async function load() {
    let alert;
    try {
      alert = await get(path);
    } catch (failure) {
      fill(page, h('h1', {}, `Alert #${id}`), notice(failure.message));
      return;
    }
    page.dataset.state = alert.state;
    if (document.activeElement !== assignee) assignee.value = alert.assignee ?? '';
    fill(page,
      h('div', { class: 'page-head' }, h('h1', {}, `Alert #${alert.id} `, badge('sev', alert.severity), ' ',
        badge('alert', alert.state))),
      canAct() ? actions(alert) : null,
      h('div', { class: 'columns' },
        section('What was seen', {}, facts([
          ['site', alert.site], ['gateway', alert.gateway],
          ['detector', alert.detector], ['raised by', alert.actor], ['device', macLink(alert.device)],
          ['device IP', text(alert.device_ip)], ['expected', alert.expected], ['observed', alert.observed],
          ['score', alert.score.toFixed(2)], ['repeats', String(alert.count)],
        ])),
        section('Lifecycle', {}, facts([
          ['state', badge('alert', alert.state)], ['resolution', text(alert.resolution?.replaceAll('_', ' '))],
          ['learnt as normal', alert.learned === undefined ? undefined : (alert.learned ? 'yes' : 'no')],
          ['assignee', text(alert.assignee)], ['first seen', time(alert.first_seen)],
          ['last seen', time(alert.last_seen)], ['calm since', time(alert.calm_since)],
          ['incident', h('span', { class: 'mono' }, alert.incident_id)],
        ]))),
      section('Evidence flows', {}, alert.flows.length
        ? h('ul', { class: 'mono plain-list' }, alert.flows.map((f) => h('li', {}, f))) : notice('None recorded.')),
      section('Responses', {}, table([
        { label: 'time', cell: (r) => time(r.time) }, { label: 'action', cell: (r) => r.action },
        { label: 'actor', class: 'mono', cell: (r) => r.actor }, { label: 'reason', class: 'wrap', cell: (r) => r.reason },
      ], alert.responses, { empty: 'No action was taken.' })),
      section('Notes', {}, table([
        { label: 'time', cell: (n) => time(n.time) }, { label: 'author', class: 'mono', cell: (n) => n.author },
        { label: 'note', class: 'wrap', cell: (n) => n.text },
      ], alert.notes, { empty: 'No note yet.' })));
  }

  await load();
  return { refresh: load, wants: (kind, data) => kind === 'alert' && (!data || String(data.id) === id) };
}
