// Signing out: ask, end the session on the server (DELETE /api/session forgets the cookie too),
// then reload, so that nothing of the map stays on screen and the viewer asks for a token again.

import { ApiError } from './api.js';
import { $, confirmDialog, toast } from './ui.js';

/** End this browser's session on the server. Resolves once the server has answered. */
export async function endSession() {
  const res = await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'X-Corral-Request': '1' } });
  if (!res.ok) throw new ApiError(res.status, `sign-out failed: ${res.status} ${res.statusText}`);
  return res.json();
}

export class SignOut {
  constructor(button, user) {
    this.button = button;
    button.title = `sign out ${user.name} (Shift+Q); signing in again needs your token or link`;
    button.hidden = false;
    button.onclick = () => this.ask();
  }

  async ask() {
    const ok = await confirmDialog({ title: 'Sign out?', message: 'This ends your session here. To sign in again you need your token or link.', okText: 'sign out' });
    if (ok) await this.signOut();
  }

  async signOut() {
    this.button.disabled = true;
    try {
      await endSession();
    } catch (e) {
      this.button.disabled = false;
      toast(e.message, 'error');
      return;
    }
    $('#user').textContent = '';
    location.reload(); // signed out: the page starts again at the sign-in box
  }
}
