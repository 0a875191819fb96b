// The console's entry point: the hash router, the header (who is signed in, sign-out, the live
// feed's state) and the live refresh of the page on view.
//
// A page module exports mount(root, ctx) -> {refresh(), wants(type, data)}: it draws into
// `root` (a fresh element per visit, so a slow answer for a page left behind lands nowhere)
// and refetches on refresh; wants() says whether a live event concerns what it shows.
import { call, fleet, forget, learnScope, server, session, signedIn, whenSignedOut } from './api.js';
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
import * as gateways from './page-gateways.js';

// [path, page, nav link, scope it exists in (any when absent)]: the hub has no policies nor
// OTA campaigns, a gateway has no gateways page.
const ROUTES = [
  [/^\/login$/, login, null],
  [/^\/overview$/, overview, 'nav-overview'],
  [/^\/devices$/, devices, 'nav-devices'],
  [/^\/devices\/([^/]+)$/, device, 'nav-devices'],
  [/^\/alerts$/, alerts, 'nav-alerts'],
  [/^\/alerts\/(\d+)$/, alert, 'nav-alerts'],
  [/^\/gateways$/, gateways, 'nav-gateways', 'fleet'],
  [/^\/policies$/, policies, 'nav-policies', 'gateway'],
  [/^\/ota$/, ota, 'nav-ota', 'gateway'],
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
  const match = ROUTES.find(([pattern, , , scope]) => pattern.test(path) && (!scope || scope === server.scope));
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

async function begin(body) {
  signedIn(body);
  document.getElementById('whoami').textContent = `${session.name} (${session.role})`;
  await learnScope().catch(() => {});
  document.body.dataset.scope = server.scope;
  for (const link of document.querySelectorAll('nav a[data-scope]')) link.hidden = link.dataset.scope !== server.scope;
  // The hub has no live feed: its pages show what they read when drawn.
  document.getElementById('live-status').hidden = fleet();
  if (!fleet()) live.start(onLiveEvent);
}

async function onSignedIn(body) {
  await begin(body);
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
    await begin(data);
  } catch {
    // Not signed in (or no session support): the router sends us to the login page.
  }
  await route();
}

start();
