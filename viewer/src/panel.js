// The cluster panel: the selection as a grid of thumbnails, least sure first, where the curator
// marks items (click or drag), excludes them, opens one large, and splits the selection.

import { postJSON } from './api.js';
import { packPoints } from './wire.js';
import { leastSureFirst, REPLACE, ADD } from './selection.js';
import { paletteColor } from './colors.js';
import { $, el, fmt, toast } from './ui.js';

const PAGE = 120;

export class ClusterPanel {
  constructor(store, actions, view, root) {
    this.store = store;
    this.actions = actions;
    this.view = view;
    this.root = root;
    this.grid = $('#grid', root);
    this.marks = new Set();
    this.order = new Uint32Array(0);
    this.shown = 0;
    this.info = new Map(); // point index -> {id, name, ...}
    this._serial = -1;
    this._gridPending = false;
    this._drag = null;
    store.on('selection', () => this.refresh());
    store.on('labels', () => this.updateTiles());
    $('#exclude-marked', root).addEventListener('click', () => this.excludeMarked());
    $('#include-marked', root).addEventListener('click', () => this.includeMarked());
    $('#clear-marks', root).addEventListener('click', () => { this.marks.clear(); this.updateTiles(); });
    $('#split', root).addEventListener('click', () => this.split());
    $('#unlabel', root).addEventListener('click', () => actions.unlabel());
    $('#zoom-selection', root).addEventListener('click', () => view.zoomToSelection());
    $('#more', root).addEventListener('click', () => this.showMore());
    document.addEventListener('pointerup', () => { this._drag = null; });
    this.refresh();
  }

  /** On a selection change: counts at once, the grid (sorting, tiles) on the next frame, so a
   * big lasso shows its count without waiting for the thumbnails. */
  refresh() {
    const sel = this.store.selection;
    const empty = !sel || sel.count === 0;
    this.root.classList.toggle('empty', empty);
    this._counts();
    if (this._gridPending) return;
    this._gridPending = true;
    requestAnimationFrame(() => { this._gridPending = false; this._refreshGrid(); });
  }

  _refreshGrid() {
    const s = this.store;
    const sel = s.selection;
    if (!sel || sel.count === 0) {
      this.order = new Uint32Array(0); this.grid.replaceChildren(); this.marks.clear(); this._serial = -1;
      this._counts();
      this._subs();
      return;
    }
    if (sel.serial !== this._serial) {
      const prev = this._serial;
      this._serial = sel.serial;
      const list = sel.list();
      this.order = leastSureFirst(list, s.map.outlier, s.map.probability);
      for (const i of [...this.marks]) if (!sel.has(i)) this.marks.delete(i);
      if (prev === -1 || this.grid.childElementCount === 0 || !this._sameStart()) {
        this.grid.replaceChildren();
        this.shown = 0;
        this.showMore();
      } else {
        this.updateTiles();
      }
    }
    this._counts();
    this._subs();
  }

  _sameStart() {
    const first = this.grid.firstElementChild;
    return first && Number(first.dataset.i) === this.order[0] && this.grid.childElementCount <= this.order.length;
  }

  _counts() {
    const sel = this.store.selection;
    const n = sel ? sel.count : 0, ex = sel ? sel.excluded.size : 0, sk = sel ? sel.skipped.size : 0;
    $('#sel-count').textContent = n ? `${fmt(n)} selected` : 'nothing selected';
    $('#sel-detail', this.root).textContent = n ? `${fmt(n - ex - sk)} to name${ex ? ` · ${fmt(ex)} excluded` : ''}${sk ? ` · ${fmt(sk)} left out` : ''}${this.marks.size ? ` · ${fmt(this.marks.size)} marked` : ''}` : '';
    $('#more', this.root).hidden = this.shown >= this.order.length;
    $('#more', this.root).textContent = `show more (${fmt(Math.max(0, this.order.length - this.shown))} left)`;
  }

  async showMore() {
    const from = this.shown, to = Math.min(this.order.length, from + PAGE);
    if (from >= to) return;
    this.shown = to;
    const idx = Array.from(this.order.subarray(from, to));
    const frag = document.createDocumentFragment();
    for (let k = 0; k < idx.length; k++) frag.append(this._tile(idx[k], from + k));
    this.grid.append(frag);
    this._counts();
    await this._fetchInfo(idx);
  }

  async _fetchInfo(idx) {
    const s = this.store;
    const need = idx.filter((i) => !this.info.has(i));
    for (let k = 0; k < need.length; k += 500) {
      const part = need.slice(k, k + 500);
      try {
        const res = await postJSON(`/api/maps/${encodeURIComponent(s.map.name)}/points`, { indices: part, etag: s.map.etag });
        for (const p of res.points) this.info.set(p.index, p);
      } catch (e) { toast(e.message, 'error'); return; }
    }
    for (const i of idx) this._fill(i);
  }

  _tile(i, pos) {
    const t = el('div', { class: 'tile', 'data-i': String(i), 'data-pos': String(pos), title: '' },
      el('img', { alt: '', loading: 'lazy', draggable: 'false' }),
      el('span', { class: 'badge' }),
      el('button', { class: 't-open', title: 'open large (O)', type: 'button', text: '⤢' }),
      el('button', { class: 't-below', title: 'leave this and every less sure item (the tiles before it) out of this naming', type: 'button', text: '⤒' }));
    t.addEventListener('pointerdown', (ev) => {
      if (ev.target.tagName === 'BUTTON' || ev.button !== 0) return;
      ev.preventDefault();
      const on = !this.marks.has(i);
      this._drag = { on };
      this._mark(i, on);
    });
    t.addEventListener('pointerenter', () => { if (this._drag) this._mark(i, this._drag.on); });
    t.addEventListener('dblclick', () => this.open(i));
    t.querySelector('.t-open').addEventListener('click', () => this.open(i));
    t.querySelector('.t-below').addEventListener('click', () => this.excludeUpTo(pos));
    this._style(t, i);
    if (this.info.has(i)) this._fill(i, t);
    return t;
  }

  _tileOf(i) { return this.grid.querySelector(`.tile[data-i="${i}"]`); }

  _fill(i, t = this._tileOf(i)) {
    const p = this.info.get(i);
    if (!t || !p) return;
    const img = t.querySelector('img');
    if (p.has_image && !img.getAttribute('src')) img.src = `/api/items/${p.id}/thumb`;
    t.title = `${p.name || p.id}\ncluster ${p.cluster} · membership ${p.probability} · outlier ${p.outlier_score}`;
  }

  _style(t, i) {
    const s = this.store;
    const lab = s.labels.label[i];
    t.classList.toggle('marked', this.marks.has(i));
    t.classList.toggle('out', s.selection.isOut(i));
    t.classList.toggle('excluded', (s.labels.state[i] & 1) === 1);
    t.classList.toggle('new', (s.map.flags[i] & 1) === 1);
    const badge = t.querySelector('.badge');
    const name = lab ? s.labelName(lab) : '';
    badge.textContent = name || '';
    badge.hidden = !name;
  }

  updateTiles() {
    if (!this.store.selection) return;
    for (const t of this.grid.children) this._style(t, Number(t.dataset.i));
    this._counts();
  }

  _mark(i, on) {
    if (on) this.marks.add(i); else this.marks.delete(i);
    const t = this._tileOf(i);
    if (t) t.classList.toggle('marked', on);
    this._counts();
  }

  excludeMarked() {
    if (!this.marks.size) { toast('mark items first: click or drag over tiles'); return; }
    this.store.selection.exclude([...this.marks]);
    this.marks.clear();
    this.store.emit('selection');
  }

  includeMarked() {
    this.store.selection.include([...this.marks]);
    this.marks.clear();
    this.store.emit('selection');
  }

  /** Leave the tile at ``pos`` and every tile before it (all less sure than it) out of this
   *  naming. A cut takes right members with the wrong ones, so they stay unlabelled without being
   *  remembered as "not this" (that is what marking a tile and E say): a false "not this" would
   *  keep the learning loop from ever suggesting the item for its own label. */
  excludeUpTo(pos) {
    this.store.selection.skip(Array.from(this.order.subarray(0, pos + 1)));
    this.store.emit('selection');
  }

  open(i) {
    const p = this.info.get(i);
    const dlg = $('#lightbox');
    const img = $('#lightbox-img', dlg);
    img.removeAttribute('src');
    if (p && p.has_image) img.src = `/api/items/${p.id}/image`;
    const s = this.store;
    const lab = s.labelName(s.labels.label[i]);
    $('#lightbox-caption', dlg).textContent = p
      ? `${p.name || p.id} · cluster ${p.cluster} · membership ${p.probability} · outlier ${p.outlier_score} · ${lab ? `"${lab}"` : 'unlabelled'}`
      : `point ${i}`;
    dlg.dataset.i = String(i);
    dlg.dataset.item = p ? p.id : '';
    const toPhoto = $('#lightbox-photo', dlg);
    if (toPhoto) toPhoto.hidden = !(p && p.crop);
    if (!dlg.open) dlg.showModal();
  }

  /** Step the large view through the grid order. */
  step(delta) {
    const dlg = $('#lightbox');
    const i = Number(dlg.dataset.i);
    const pos = this.order.indexOf(i);
    const next = this.order[Math.min(this.order.length - 1, Math.max(0, pos + delta))];
    if (next !== undefined) this._fetchInfo([next]).then(() => this.open(next));
  }

  async split() {
    const s = this.store;
    const sel = s.selection;
    if (!sel || sel.count < 4) { toast('select at least 4 points to split', 'error'); return; }
    if (!s.canWrite) { toast(`your role (${s.user.role}) may not split`, 'error'); return; }
    $('#split', this.root).disabled = true;
    toast('splitting…');
    try {
      const res = await postJSON(`/api/maps/${encodeURIComponent(s.map.name)}/split`, { indices: packPoints(sel.list(), s.map.n), etag: s.map.etag });
      const sub = new Int16Array(s.map.n).fill(-1);
      res.subclusters.forEach((c, k) => { if (c.noise !== true) for (const i of c.indices) sub[i] = k; });
      s.sub = sub;
      s.subclusters = res.subclusters;
      s.emit('selection');
      toast(`${res.subclusters.filter((c) => c.noise !== true).length} sub-clusters (${res.seconds}s)`);
    } catch (e) {
      toast(e.message, 'error');
    } finally {
      $('#split', this.root).disabled = false;
    }
  }

  _subs() {
    const box = $('#subclusters', this.root);
    const s = this.store;
    if (!s.subclusters.length || !s.selection.count) { box.replaceChildren(); box.hidden = true; return; }
    box.hidden = false;
    const kind = s.subclusters[0].kind; // set by the cluster tree's steps (climb.js)
    box.replaceChildren(el('span', { class: 'muted', text: kind ? `${kind}: ` : 'sub-clusters: ' }), ...s.subclusters.map((c, k) => {
      const rgb = c.noise === true ? [110, 110, 110] : paletteColor(k + 500);
      return el('button', {
        class: 'chip', type: 'button', title: `select this ${kind ? 'node' : 'sub-cluster'} (shift: add)`,
        onclick: (ev) => {
          const keep = { sub: s.sub, subclusters: s.subclusters };
          s.selection.apply(c.indices, ev.shiftKey ? ADD : REPLACE);
          s.selectedAt = performance.now();
          Object.assign(s, keep);
          s.emit('selection');
        },
      }, el('i', { style: `background: rgb(${rgb.join(',')})` }), `${c.label || (c.noise === true ? 'noise' : k + 1)}: ${fmt(c.size)}`);
    }));
  }
}
