// The one way the console talks to the gateway: relative /api/v1 URLs (so the fleet hub can
// serve the same files over its own API), the session cookie, and the CSRF token the session
// gave on every request that changes something.
import { showError } from './dom.js';

// Who is signed in, from GET or POST /api/v1/session.
export const session = { name: null, role: null, csrf: null };

let onSignedOut = () => {};

// `handler` runs when the gateway answers 401: the session is gone.
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

export function signedIn(body) {
  Object.assign(session, { name: body.name, role: body.role, csrf: body.csrf_token });
}

export function forget() {
  Object.assign(session, { name: null, role: null, csrf: null });
}

// What the console talks to, from GET /api/v1/status: one `gateway`, or the fleet hub (`fleet`),
// whose lists carry site and gateway and which has no policy, OTA or live-feed endpoints.
export const server = { scope: 'gateway' };

export function fleet() {
  return server.scope === 'fleet';
}

export async function learnScope() {
  const status = await get('/status');
  server.scope = status?.scope === 'fleet' ? 'fleet' : 'gateway';
}

export function canAct() {
  return session.role === 'operator' || session.role === 'admin';
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value !== null && value !== undefined && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// Calls /api/v1`path`. Resolves to {data, next} (next: the Next-Cursor header). Failures reject
// with an ApiError shown in the error banner, except the statuses listed in `quiet` (a page
// that degrades on 404 passes [404]); a 401 also signs the console out.
export async function call(path, { method = 'GET', params, body, quiet = [] } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let response;
  try {
    response = await fetch(`/api/v1${path}${query(params)}`, {
      method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    const failure = new ApiError(0, `The gateway cannot be reached (${error.message}).`);
    showError(failure.message);
    throw failure;
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return { data, next: response.headers.get('Next-Cursor') };
  const failure = new ApiError(response.status, `${method} ${path}: ${data?.error ?? response.statusText} (${response.status})`);
  if (response.status === 401 && path !== '/session') {
    forget();
    onSignedOut();
  } else if (!quiet.includes(response.status)) {
    showError(failure.message);
  }
  throw failure;
}

export async function get(path, params) {
  return (await call(path, { params })).data;
}

// GET that resolves to null when the endpoint answers 404 (one this gateway does not offer yet).
export async function optional(path, params) {
  try {
    return (await call(path, { params, quiet: [404] })).data;
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

export async function send(method, path, body) {
  return (await call(path, { method, body })).data;
}
