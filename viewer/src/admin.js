// The users page (admins): every user with their role and how they sign in; add one, change a
// role, set a new password (their sessions end), remove one. A token made here is shown once.

import { getJSON, postJSON } from './api.js';
import { $, el, confirmDialog } from './ui.js';

const ROLES = ['viewer', 'curator', 'service', 'admin'];

export class UsersDialog {
  constructor(store, dialog, button) {
    this.store = store;
    this.dialog = dialog;
    this.body = $('#users-table tbody', dialog);
    this.message = $('#users-message', dialog);
    button.hidden = false;
    button.onclick = () => this.open();
    $('#users-add', dialog).onsubmit = (ev) => { ev.preventDefault(); this.add(); };
  }

  async open() {
    this.say('');
    if (!this.dialog.open) this.dialog.showModal();
    await this.load();
  }

  say(text, kind = '') {
    this.message.textContent = text;
    this.message.className = `small ${kind}`;
  }

  async load() {
    try {
      const res = await getJSON('/api/users');
      this.body.replaceChildren(...res.users.map((u) => this.row(u)));
    } catch (e) { this.say(e.message, 'error'); }
  }

  row(u) {
    const me = u.name === this.store.user.name;
    const role = el('select', { 'aria-label': `role of ${u.name}`, disabled: me, onchange: () => this.change(u.name, { role: role.value }) },
      ...ROLES.map((r) => el('option', { value: r, selected: r === u.role, text: r })));
    const password = el('input', { type: 'password', placeholder: 'new password', autocomplete: 'new-password', 'aria-label': `new password for ${u.name}` });
    const how = [u.password && 'password', u.token && 'token'].filter(Boolean).join(' + ') || '—';
    return el('tr', { 'data-user': u.name },
      el('td', { text: u.name }), el('td', {}, role), el('td', { text: how }), el('td', { text: String(u.sessions ?? '') }),
      el('td', {},
        password,
        el('button', { type: 'button', class: 'set-password', onclick: () => this.change(u.name, { password: password.value }) }, 'set password'),
        me ? null : el('button', { type: 'button', class: 'remove', onclick: () => this.remove(u.name) }, 'remove')));
  }

  async change(name, body) {
    if (body.password !== undefined && !body.password) { this.say('type the new password first', 'error'); return; }
    try {
      await postJSON(`/api/users/${encodeURIComponent(name)}`, body, 'PATCH');
      this.say(body.password !== undefined ? `${name} has a new password; their sessions ended` : `${name} is now ${body.role}`);
    } catch (e) { this.say(e.message, 'error'); }
    await this.load();
  }

  async remove(name) {
    const ok = await confirmDialog({ title: `Remove ${name}?`, message: 'Their password, token and sessions stop working at once.', okText: 'remove' });
    if (!this.dialog.open) this.dialog.showModal(); // the confirm dialog closed over it
    if (!ok) return;
    try {
      await postJSON(`/api/users/${encodeURIComponent(name)}`, {}, 'DELETE');
      this.say(`${name} removed`);
    } catch (e) { this.say(e.message, 'error'); }
    await this.load();
  }

  async add() {
    const name = $('#users-add-name', this.dialog).value.trim();
    const password = $('#users-add-password', this.dialog).value;
    const token = $('#users-add-token', this.dialog).checked;
    if (!name) { this.say('a name first', 'error'); return; }
    if (!password && !token) { this.say('give them a password, or tick "also a token"', 'error'); return; }
    try {
      const res = await postJSON('/api/users', { name, role: $('#users-add-role', this.dialog).value, password: password || null, token });
      $('#users-add-name', this.dialog).value = '';
      $('#users-add-password', this.dialog).value = '';
      this.say(res.token ? `${name} added; their token (shown once): ${res.token}` : `${name} added; they sign in with their password`);
    } catch (e) { this.say(e.message, 'error'); }
    await this.load();
  }
}
