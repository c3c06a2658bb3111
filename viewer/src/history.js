// The history panel: your operations from the server's operation log, newest first: label
// actions with the event they made, and every request of yours that failed (with why). Undo from
// here is the label store's own per-user undo, so it reverses your newest action that is not
// undone yet: the entry that carries the undo button. Admins may show everyone's operations.

import { getJSON } from './api.js';
import { $, el, fmt, toast } from './ui.js';

const PAGE = 50;

export class HistoryPanel {
  constructor(store, actions, root, button) {
    this.store = store;
    this.actions = actions;
    this.root = root;
    this.list = $('#history-list', root);
    this.ops = [];
    this.nextUndo = null;
    this.loading = null;
    button.hidden = false;
    button.onclick = () => this.toggle();
    $('#history-close', root).onclick = () => this.toggle(false);
    $('#history-refresh', root).onclick = () => this.refresh();
    $('#history-more', root).onclick = () => this.refresh({ older: true });
    const everyone = $('#history-everyone', root);
    $('#history-everyone-box', root).hidden = !store.user.can.includes('admin');
    everyone.onchange = () => this.refresh();
    store.on('action', () => { if (this.open) this.refresh(); });
  }

  get open() { return !this.root.hidden; }
  get everyone() { return $('#history-everyone', this.root).checked; }

  toggle(on = !this.open) {
    this.root.hidden = !on;
    if (on) this.refresh();
  }

  /** Load the newest page (or, with ``older``, the page after the last entry shown). */
  async refresh({ older = false } = {}) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (this.everyone) q.set('everyone', 'true');
    if (older && this.ops.length) q.set('before', String(this.ops[this.ops.length - 1].id));
    const run = (async () => {
      try {
        const res = await getJSON(`/api/operations?${q}`);
        this.ops = older ? [...this.ops, ...res.operations] : res.operations;
        if (!older) this.nextUndo = res.next_undo;
        $('#history-more', this.root).hidden = !res.more;
        this.render();
      } catch (e) {
        toast(`history: ${e.message}`, 'error');
      }
    })();
    this.loading = run;
    return run;
  }

  render() {
    const me = this.store.user.name;
    $('#history-empty', this.root).hidden = this.ops.length > 0;
    this.list.replaceChildren(...this.ops.map((op) => {
      const ev = op.event;
      const ok = op.outcome === 'ok';
      const item = el('li', { class: ev && ev.undone ? 'undone' : '', 'data-id': String(op.id), 'data-event': op.event_id ? String(op.event_id) : '' },
        el('span', { class: 'when', text: new Date(op.at * 1000).toLocaleTimeString(), title: new Date(op.at * 1000).toISOString() }),
        el('span', { class: 'what', text: describe(op, this.everyone), title: `${op.method} ${op.path} → ${op.status}${op.detail ? `: ${op.detail}` : ''}` }),
        el('span', { class: `outcome ${ok ? 'ok' : 'failed'}`, text: ok ? (ev && ev.undone ? 'undone' : 'ok') : `${op.outcome} ${op.status}` }));
      if (op.user === me && op.event_id && op.event_id === this.nextUndo && this.store.canWrite) {
        item.append(el('button', { class: 'write history-undo', type: 'button', title: 'undo this (your newest action that is not undone)', onclick: () => this.undo(op) }, '↶ undo'));
      }
      return item;
    }));
  }

  async undo(op) {
    const res = await this.actions.undo();
    if (res && res.event_id && op.event_id && this.ops.length) {
      // the store undoes the user's newest action: say so if another tab acted meanwhile
      await this.refresh();
      const undone = this.ops.find((o) => o.event_id === op.event_id);
      if (undone && undone.event && !undone.event.undone) toast('undid a newer action of yours (made in another tab); this one is next', 'warn');
    }
  }
}

function describe(op, withUser) {
  const who = withUser ? `${op.user || '(nobody)'}: ` : '';
  const ev = op.event;
  if (ev) {
    const what = ev.kind === 'undo' || ev.kind === 'redo' ? `${ev.kind} of #${ev.target}` : `${ev.kind}${ev.label ? ` "${ev.label}"` : ''}`;
    return `${who}#${op.event_id} ${what}${op.items != null ? ` · ${fmt(op.items)} items` : ''}`;
  }
  const route = op.route.replace(/^\/api\//, '');
  return `${who}${op.method} ${route}${op.detail ? ` · ${op.detail}` : ''}`;
}
