// The labels list: every label with its count on this map, progress, and the label-level
// actions (select its items, rename, merge, remove).

import { $, el, fmt, promptDialog, confirmDialog } from './ui.js';
import { paletteColor } from './colors.js';
import { REPLACE, modeFromEvent } from './selection.js';

export class LabelsPanel {
  constructor(store, actions, root) {
    this.store = store;
    this.actions = actions;
    this.root = root;
    this.list = $('#label-list', root);
    this.filter = $('#label-filter', root);
    this.onReview = null; // (name) => open the review page of the label's items
    this.filter.addEventListener('input', () => this.render());
    store.on('labels', () => this.render());
    store.on('map', () => this.render());
  }

  render() {
    const s = this.store;
    if (!s.labels) return;
    const { counts, labelled, total } = s.labelCounts();
    const pct = total ? (100 * labelled) / total : 0;
    $('#progress-text').textContent = `${pct < 10 && pct > 0 ? pct.toFixed(1) : Math.round(pct)}% of items labelled`;
    $('#progress-detail').textContent = `${fmt(labelled)} of ${fmt(total)} · ${fmt(s.labels.list.length)} labels`;
    $('#progress-bar').style.width = `${pct}%`;
    const q = this.filter.value.trim().toLocaleLowerCase();
    const rows = s.labels.list
      .filter((l) => !q || l.name.toLocaleLowerCase().includes(q) || (l.aliases || []).some((a) => a.toLocaleLowerCase().includes(q)))
      .map((l) => ({ ...l, here: counts.get(l.id) || 0 }))
      .sort((a, b) => b.here - a.here || b.count - a.count || a.name.localeCompare(b.name));
    this.list.replaceChildren(...rows.map((l) => this._row(l)));
  }

  _row(l) {
    const rgb = paletteColor(l.id + 1000);
    const write = this.store.canWrite;
    return el('li', { class: 'label-row', 'data-label': l.name },
      el('i', { class: 'swatch', style: `background: rgb(${rgb.join(',')})` }),
      el('button', { class: 'label-name', type: 'button', title: `select its items on the map (shift: add)${(l.aliases || []).length ? `\nalso known as: ${l.aliases.join(', ')}` : ''}`, onclick: (ev) => this.selectLabel(l.id, modeFromEvent(ev)), text: l.name }),
      el('span', { class: 'count', title: `${fmt(l.here)} on this map, ${fmt(l.count)} in all`, text: fmt(l.here) }),
      write && this.onReview ? el('button', { class: 'icon', type: 'button', title: 'review its items, a page at a time (V with the label selected)', 'data-act': 'review', onclick: () => this.onReview(l.name), text: '☑' }) : null,
      write ? el('button', { class: 'icon', type: 'button', title: 'rename (R)', 'data-act': 'rename', onclick: () => this.rename(l.name), text: '✎' }) : null,
      write ? el('button', { class: 'icon', type: 'button', title: 'merge into another label (M)', 'data-act': 'merge', onclick: () => this.merge(l.name), text: '⇲' }) : null,
      write ? el('button', { class: 'icon', type: 'button', title: 'remove this label (D)', 'data-act': 'delete', onclick: () => this.remove(l.name), text: '✕' }) : null);
  }

  selectLabel(id, mode = REPLACE) {
    const lab = this.store.labels.label;
    const out = [];
    for (let i = 0; i < lab.length; i++) if (lab[i] === id) out.push(i);
    this.store.select(out, mode);
  }

  /** The label most of the selection carries (the default target of label actions). */
  selectionLabel() {
    const s = this.store;
    if (!s.selection || !s.selection.count) return null;
    const counts = new Map();
    for (const i of s.selection.list()) { const l = s.labels.label[i]; if (l) counts.set(l, (counts.get(l) || 0) + 1); }
    let best = 0, bestN = 0;
    for (const [l, n] of counts) if (n > bestN) { best = l; bestN = n; }
    return best ? s.labelName(best) : null;
  }

  names() { return this.store.labels.list.map((l) => l.name); }

  async rename(name = this.selectionLabel()) {
    if (!name) name = await promptDialog({ title: 'Rename a label', label: 'Which label?', options: this.names() });
    if (!name) return;
    const to = await promptDialog({ title: `Rename "${name}"`, label: 'New name (the old one stays as an alias)', value: name, okText: 'Rename' });
    if (to && to !== name) await this.actions.rename(name, to);
  }

  async merge(name = this.selectionLabel()) {
    if (!name) name = await promptDialog({ title: 'Merge labels', label: 'Which label to merge?', options: this.names() });
    if (!name) return;
    const into = await promptDialog({ title: `Merge "${name}" into…`, label: 'Target label (existing or new)', options: this.names().filter((x) => x !== name), okText: 'Merge' });
    if (into) await this.actions.merge([name], into);
  }

  async remove(name = this.selectionLabel()) {
    if (!name) name = await promptDialog({ title: 'Remove a label', label: 'Which label?', options: this.names() });
    if (!name) return;
    const ok = await confirmDialog({ title: `Remove "${name}"?`, message: 'Its items become unlabelled. You can undo this.', okText: 'Remove' });
    if (ok) await this.actions.remove(name);
  }
}
