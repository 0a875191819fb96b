// The console's entry point: the hash router, the header (who is signed in, sign-out, the live
// feed's state) and the live refresh of the page on view.
//
// A page module exports mount(root, ctx) -> {refresh(), wants(type, data)}: it draws into
// `root` (a fresh element per visit, so a slow answer for a page left behind lands nowhere)
// and refetches on refresh; wants() says whether a live event concerns what it shows.
import { call, forget, session, signedIn, whenSignedOut } from './api.js';
import { clearError, debounce } from './dom.js';
import * as live from './live.js';
import * as login from './page-login.js';
import * as overview from './page-overview.js';
import * as devices from './page-devices.js';
import * as device from './page-device.js';
import * as alerts from './page-alerts.js';
import * as alert from './page-alert.js';
import * as policies from './page-policies.js';
import * as ota from './page-ota.js';

const ROUTES = [
  [/^\/login$/, login, null],
  [/^\/overview$/, overview, 'nav-overview'],
  [/^\/devices$/, devices, 'nav-devices'],
  [/^\/devices\/([^/]+)$/, device, 'nav-devices'],
  [/^\/alerts$/, alerts, 'nav-alerts'],
  [/^\/alerts\/(\d+)$/, alert, 'nav-alerts'],
  [/^\/policies$/, policies, 'nav-policies'],
  [/^\/ota$/, ota, 'nav-ota'],
];
// Live events arriving in a burst refresh the page once.
const REFRESH_DEBOUNCE_MS = 800;

let current = null;
// Where to go after signing in (the page asked for before the login page).
let wanted = '#/overview';

function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#/, '').split('?');
  return { path: path || '/overview', query: new URLSearchParams(search) };
}

async function route() {
  const { path, query } = parseHash();
  if (!session.role && path !== '/login') {
    wanted = location.hash || '#/overview';
    location.hash = '#/login';
    return;
  }
  if (session.role && path === '/login') {
    location.hash = '#/overview';
    return;
  }
  const match = ROUTES.find(([pattern]) => pattern.test(path));
  const [pattern, page, nav] = match ?? [/^/, overview, 'nav-overview'];
  clearError();
  document.getElementById('top').hidden = page === login;
  for (const link of document.querySelectorAll('nav a')) {
    link.setAttribute('aria-current', link.dataset.testid === nav ? 'page' : 'false');
  }
  const root = document.createElement('div');
  document.getElementById('view').replaceChildren(root);
  const params = (path.match(pattern) ?? []).slice(1).map(decodeURIComponent);
  current = null;
  try {
    current = await page.mount(root, { params, query, onSignedIn });
  } catch {
    // The API's answer is in the error banner already; the next navigation starts afresh.
  }
}

const refresh = debounce(() => current?.refresh(), REFRESH_DEBOUNCE_MS);

function onLiveEvent(type, data) {
  if (type === 'resync' || current?.wants?.(type, data)) refresh();
}

function begin(body) {
  signedIn(body);
  document.getElementById('whoami').textContent = `${session.name} (${session.role})`;
  live.start(onLiveEvent);
}

function onSignedIn(body) {
  begin(body);
  location.hash = wanted === '#/login' ? '#/overview' : wanted;
}

function onSignedOut() {
  forget();
  live.stop();
  document.getElementById('whoami').textContent = '';
  if (parseHash().path !== '/login') {
    wanted = location.hash;
    location.hash = '#/login';
  }
}

async function signOut() {
  try {
    await call('/session', { method: 'DELETE' });
  } finally {
    wanted = '#/overview';
    onSignedOut();
  }
}

async function start() {
  whenSignedOut(onSignedOut);
  document.getElementById('sign-out').addEventListener('click', signOut);
  document.getElementById('error-close').addEventListener('click', clearError);
  window.addEventListener('hashchange', route);
  try {
    const { data } = await call('/session', { quiet: [401, 404] });
    begin(data);
  } catch {
    // Not signed in (or no session support): the router sends us to the login page.
  }
  await route();
}

start();
