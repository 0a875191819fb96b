// The live feed: GET /api/v1/stream (server-sent events, with the session cookie). Shows its
// state in `live-status` and hands each event (alert, device, audit, resync) to a listener.
const EVENTS = ['alert', 'device', 'audit', 'resync'];
// A stream the server closed (or refused) is retried after this long; EventSource itself only
// retries a connection that dropped.
const RETRY_MS = 30_000;

let source = null;
let retry = null;

function status(label) {
  const el = document.getElementById('live-status');
  el.textContent = label;
  el.className = `live ${label === 'live' ? 'on' : 'off'}`;
}

// listener(type, data): data is the event's JSON (null for resync).
export function start(listener) {
  stop();
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
  clearTimeout(retry);
  source?.close();
  source = null;
  status('offline');
}
