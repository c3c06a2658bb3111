// Search by label (name or alias) or file name; the matches become the selection.

import { getJSON } from './api.js';
import { modeFromEvent } from './selection.js';
import { $, fmt, toast } from './ui.js';

export class Search {
  constructor(store, view, input) {
    this.store = store;
    this.view = view;
    this.input = input;
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') { ev.preventDefault(); this.run(input.value, modeFromEvent(ev)); }
      if (ev.key === 'Escape') { input.value = ''; input.blur(); }
    });
  }

  focus() { this.input.focus(); this.input.select(); }

  async run(text, mode) {
    const q = text.trim();
    if (!q) return;
    const s = this.store;
    try {
      const res = await getJSON(`/api/maps/${encodeURIComponent(s.map.name)}/search?q=${encodeURIComponent(q)}`);
      s.select(res.indices, mode);
      $('#search-result').textContent = `${fmt(res.total)} match${res.total === 1 ? '' : 'es'} (${fmt(res.by_label)} by label, ${fmt(res.by_name)} by file name)`;
      if (res.total) this.view.zoomToSelection();
      else toast(`nothing matches "${q}"`);
    } catch (e) { toast(e.message, 'error'); }
  }
}
