// The live feed: GET /api/v1/stream (server-sent events, with the session cookie). Shows its
// state in `live-status` and hands each event (alert, device, audit, resync) to a listener.
const EVENTS = ['alert', 'device', 'audit', 'resync'];
// A stream the server closed (or refused) is retried after this long; EventSource itself only
// retries a connection that dropped.
const RETRY_MS = 30_000;

let source = null;
let retry = null;
let current = null;

// A page the browser leaves (or keeps in its back/forward cache) must not keep its stream
// open: over HTTP/1.1 a browser opens at most six connections to one host, and every stream
// left behind holds one until the next page's requests wait for ever.
window.addEventListener('pagehide', () => {
  const listener = current;
  stop();
  current = listener;
});
window.addEventListener('pageshow', (event) => {
  if (event.persisted && current) start(current);
});

function status(label) {
  const el = document.getElementById('live-status');
  el.textContent = label;
  el.className = `live ${label === 'live' ? 'on' : 'off'}`;
}

// listener(type, data): data is the event's JSON (null for resync).
export function start(listener) {
  stop();
  current = listener;
  status('connecting');
  source = new EventSource('/api/v1/stream');
  source.addEventListener('open', () => status('live'));
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      status('offline');
      retry = setTimeout(() => start(listener), RETRY_MS);
    } else {
      status('reconnecting');
    }
  });
  for (const type of EVENTS) {
    source.addEventListener(type, (event) => {
      let data = null;
      try { data = event.data ? JSON.parse(event.data) : null; } catch { data = null; }
      listener(type, data);
    });
  }
}

export function stop() {
  current = null;
  clearTimeout(retry);
  source?.close();
  source = null;
  status('offline');
}
