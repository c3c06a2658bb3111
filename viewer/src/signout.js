// Signing out: ask (here, or everywhere), end the session(s) on the server (which forgets the
// cookie too), then reload, so that nothing of the map stays on screen and the sign-in page shows.

import { ApiError } from './api.js';
import { $, toast } from './ui.js';

/** End this browser's session on the server, or with ``everywhere`` every session of the user. */
export async function endSession({ everywhere = false } = {}) {
  const res = await fetch(everywhere ? '/api/sessions' : '/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'X-Corral-Request': '1' } });
  if (!res.ok) throw new ApiError(res.status, `sign-out failed: ${res.status} ${res.statusText}`);
  return res.json();
}

export class SignOut {
  constructor(button, user) {
    this.button = button;
    button.title = `sign out ${user.name} (Shift+Q): here, or everywhere`;
    button.hidden = false;
    button.onclick = () => this.ask();
  }

  /** Ask here or everywhere; resolves once signed out (the page then reloads) or cancelled. */
  ask() {
    const dlg = $('#signout-dialog');
    return new Promise((resolve) => {
      const done = (how) => { dlg.onclose = null; dlg.close(); resolve(how ? this.signOut({ everywhere: how === 'everywhere' }) : null); };
      $('#signout-here').onclick = () => done('here');
      $('#signout-everywhere').onclick = () => done('everywhere');
      $('#signout-cancel').onclick = () => done(null);
      dlg.onclose = () => resolve(null);
      dlg.showModal();
      $('#signout-here').focus();
    });
  }

  async signOut({ everywhere = false } = {}) {
    this.button.disabled = true;
    try {
      await endSession({ everywhere });
    } catch (e) {
      this.button.disabled = false;
      toast(e.message, 'error');
      return;
    }
    $('#user').textContent = '';
    location.reload(); // signed out: the page starts again at the sign-in page
  }
}
