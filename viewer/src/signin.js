// The sign-in page: a name and a password (people), or a token (scripts' owners, the single-user
// link). The server answers with the session cookie; the page never sees or keeps a credential.

import { signIn, signInWithPassword, ApiError } from './api.js';
import { $ } from './ui.js';

/** Show the sign-in page until someone signs in; resolves to their user. */
export function askSignIn() {
  return new Promise((resolve) => {
    const dlg = $('#signin');
    const error = $('#signin-error');
    const go = $('#signin-go');
    dlg.oncancel = (ev) => ev.preventDefault(); // nothing works without signing in
    $('#signin-form').onsubmit = async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      const token = $('#signin-token').value.trim();
      const name = $('#signin-name').value.trim();
      const password = $('#signin-password').value;
      if (!token && (!name || !password)) { error.textContent = 'enter your name and password'; return; }
      go.disabled = true;
      try {
        const res = token ? await signIn(token) : await signInWithPassword(name, password);
        $('#signin-password').value = '';
        $('#signin-token').value = '';
        dlg.close();
        resolve(res.user);
      } catch (e) {
        // 429: too many failed attempts; the server says how long to wait
        error.textContent = e instanceof ApiError ? e.message : `sign-in failed: ${e.message}`;
        $('#signin-password').select();
      } finally {
        go.disabled = false;
      }
    };
    dlg.showModal();
    $('#signin-name').focus();
  });
}
