// Suggestions: when the workspace has a recognition index, the names it would give the
// selection, with scores; one click names the selection.

import { postJSON, ApiError } from './api.js';
import { el, fmt } from './ui.js';

const SAMPLE = 256;

export class Suggestions {
  constructor(store, actions, root) {
    this.store = store;
    this.actions = actions;
    this.root = root;
    this.items = [];
    this.available = true;
    this._serial = -1;
    this._timer = null;
    store.on('selection', () => { clearTimeout(this._timer); this._timer = setTimeout(() => this.refresh(), 250); });
  }

  async refresh() {
    const s = this.store;
    const sel = s.selection;
    if (!this.available || !sel || !sel.count) { this.show([]); return; }
    if (sel.serial === this._serial) return;
    this._serial = sel.serial;
    const list = sel.toName();
    const step = Math.max(1, Math.floor(list.length / SAMPLE));
    const sample = [];
    for (let k = 0; k < list.length && sample.length < SAMPLE; k += step) sample.push(list[k]);
    try {
      const res = await postJSON(`/api/maps/${encodeURIComponent(s.map.name)}/suggest`, { indices: sample, etag: s.map.etag });
      if (sel.serial !== this._serial) return;
      if (!res.available) { this.available = false; this.show([]); return; }
      this.show(res.suggestions || []);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 501)) this.available = false;
      this.show([]);
    }
  }

  show(items) {
    this.items = items;
    this.root.hidden = !items.length;
    this.root.replaceChildren(el('span', { class: 'muted', text: 'suggested: ' }), ...items.slice(0, 3).map((sug, k) => el('button', {
      type: 'button', class: 'chip suggestion', title: `${fmt(sug.votes ?? 0)} of the sampled items vote for it${k === 0 ? ' (A accepts)' : ''}`,
      onclick: () => this.actions.assign(sug.label),
    }, `${sug.label} `, el('small', { text: Number(sug.score).toFixed(2) }))));
  }

  acceptTop() { if (this.items.length) this.actions.assign(this.items[0].label); }
}
