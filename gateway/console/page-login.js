// #/login: sign in with an API token or a local user and password (POST /api/v1/session,
// which sets the HttpOnly session cookie; the token itself is never kept by the page).
import { call } from './api.js';
import { h } from './dom.js';

export function mount(root, ctx) {
  const token = h('input', { type: 'password', id: 'login-token', testid: 'login-token', autocomplete: 'off' });
  const user = h('input', { type: 'text', id: 'login-user', testid: 'login-user', autocomplete: 'username' });
  const password = h('input', { type: 'password', id: 'login-password', testid: 'login-password',
    autocomplete: 'current-password' });
  const error = h('p', { class: 'login-error', testid: 'login-error', role: 'alert' });
  const submit = h('button', { type: 'submit', testid: 'login-submit', class: 'primary' }, 'Sign in');

  async function signIn(event) {
    event.preventDefault();
    error.textContent = '';
    const body = token.value
      ? { token: token.value }
      : { user: user.value.trim(), password: password.value };
    if (!body.token && !(body.user && body.password)) {
      error.textContent = 'Enter an API token, or a user name and password.';
      return;
    }
    submit.disabled = true;
    try {
      const { data } = await call('/session', { method: 'POST', body, quiet: [400, 401, 404, 429] });
      token.value = '';
      password.value = '';
      ctx.onSignedIn(data);
    } catch (failure) {
      error.textContent = {
        401: 'Sign-in refused: unknown token, or wrong user name or password.',
        404: 'This gateway offers no console sign-in (POST /api/v1/session answered 404).',
        429: 'Too many failed sign-ins from this address: wait a little and try again.',
      }[failure.status] ?? failure.message;
    } finally {
      submit.disabled = false;
    }
  }

  root.append(h('form', { class: 'login', onsubmit: signIn },
    h('h1', {}, 'iotgw console'),
    h('fieldset', {}, h('legend', {}, 'With an API token'),
      h('label', { for: 'login-token' }, 'Token'), token),
    h('p', { class: 'or' }, 'or'),
    h('fieldset', {}, h('legend', {}, 'As a local user'),
      h('label', { for: 'login-user' }, 'User'), user,
      h('label', { for: 'login-password' }, 'Password'), password),
    error, submit));
  token.focus();
  return { refresh() {}, wants: () => false };
}
