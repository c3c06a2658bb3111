// The photos view: photos with their detector boxes in a grid (filters: unnamed boxes, low
// detector score), and one photo large, where a curator deletes a box (Delete), drags a box's
// edges to adjust it, draws a box the detector missed (N, then drag) and names a box (Enter in the
// name box; a suggested name is filled in). Ctrl+Z / Ctrl+Shift+Z undo and redo; Esc steps back.
// Every revision is an event of the label store; the photo's history lists them.

import { getJSON, postJSON } from './api.js';
import { $, el, fmt, toast } from './ui.js';

const EDGES = ['n', 's', 'e', 'w', 'nw', 'ne', 'sw', 'se'];

export class PhotosView {
  constructor(store, root, { onChanged } = {}) {
    this.store = store;
    this.root = root;
    this.onChanged = onChanged || (() => {});
    this.photo = null; // the photo shown large: {id, width, height, version, boxes}
    this.selected = null; // box id
    this.mode = 'idle'; // 'idle' | 'draw' | 'drag'
    this.busy = false;
    this.changed = false; // boxes were revised since the map was loaded
    this.grid = $('#photos-grid', root);
    this.one = $('#photo-one', root);
    this.stage = $('#photo-stage', root);
    this.img = $('#photo-img', root);
    this.layer = $('#photo-boxes', root);
    $('#photos-unnamed', root).addEventListener('change', () => this.list());
    $('#photos-low', root).addEventListener('change', () => this.list());
    $('#photos-low-score', root).addEventListener('change', () => { if ($('#photos-low', root).checked) this.list(); });
    for (const b of root.querySelectorAll('.photos-close')) b.addEventListener('click', () => this.close());
    $('#photos-back', root).addEventListener('click', () => this.back());
    $('#photo-draw', root).addEventListener('click', () => this.startDraw());
    $('#photo-delete', root).addEventListener('click', () => this.deleteSelected());
    $('#photo-undo', root).addEventListener('click', () => this.undo(false));
    $('#photo-redo', root).addEventListener('click', () => this.undo(true));
    $('#photo-name-form', root).addEventListener('submit', (ev) => { ev.preventDefault(); this.nameSelected(); });
    this.stage.addEventListener('mousedown', (ev) => this._down(ev));
    window.addEventListener('mousemove', (ev) => this._move(ev));
    window.addEventListener('mouseup', (ev) => this._up(ev));
    // while the view is up its keys come first, and none reaches the map underneath
    window.addEventListener('keydown', (ev) => this._key(ev), true);
  }

  get open() { return !this.root.hidden; }

  _say(text, kind = '') {
    const m = $('#photos-message', this.root);
    m.textContent = text;
    m.className = `small ${kind}`;
  }

  _key(ev) {
    if (!this.open || document.querySelector('dialog[open]')) return;
    const t = ev.target;
    const typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
    const k = ev.key;
    const ctrl = ev.ctrlKey || ev.metaKey;
    let fn = null;
    if (ctrl && (k === 'z' || k === 'Z')) fn = () => this.undo(ev.shiftKey);
    else if (ctrl && (k === 'y' || k === 'Y')) fn = () => this.undo(true);
    else if (k === 'Escape') fn = () => (typing ? t.blur() : this.escape());
    else if (typing || ctrl || ev.altKey) { ev.stopPropagation(); return; }
    else if ((k === 'Delete' || k === 'Backspace') && this.photo) fn = () => this.deleteSelected();
    else if ((k === 'n' || k === 'N') && this.photo) fn = () => this.startDraw();
    else if (k === 'Enter' && this.photo && this.selected) fn = () => $('#photo-name', this.root).focus();
    else if (k === 'Tab' && this.photo) fn = () => this._cycle(ev.shiftKey ? -1 : 1);
    else if ((k === 'ArrowRight' || k === 'ArrowLeft') && this.photo) fn = () => this.step(k === 'ArrowRight' ? 1 : -1);
    ev.stopPropagation();
    if (fn) { ev.preventDefault(); fn(); }
  }

  // -- the grid ------------------------------------------------------------------------------
  async show() {
    this.root.hidden = false;
    await this.list();
  }

  _query() {
    const q = new URLSearchParams({ limit: '200' });
    if ($('#photos-unnamed', this.root).checked) q.set('unnamed', 'true');
    if ($('#photos-low', this.root).checked) q.set('max_score', String(Number($('#photos-low-score', this.root).value) || 0));
    return q.toString();
  }

  async list() {
    this.photo = null;
    this.one.hidden = true;
    this.grid.hidden = false;
    $('#photos-back', this.root).hidden = true;
    $('#photos-filters', this.root).hidden = false;
    $('#photos-title', this.root).textContent = 'Photos';
    let res;
    try {
      res = await getJSON(`/api/photos?${this._query()}`);
    } catch (e) { this._say(e.message, 'error'); return; }
    this.photos = res.photos;
    $('#photos-count', this.root).textContent = `${fmt(res.total)} photo${res.total === 1 ? '' : 's'}`;
    this._say(res.total ? '' : 'no photo with detector boxes matches');
    this.grid.replaceChildren(...res.photos.map((p) => this._tile(p)));
  }

  _tile(p) {
    const boxes = p.boxes.map((b) => el('i', { class: `pbox${b.label ? ' named' : ''}`, style: pct(b.bbox, p), title: b.label || 'unnamed' }));
    const unnamed = p.boxes.filter((b) => !b.label).length;
    return el('figure', { class: 'ptile', 'data-photo': p.id, onclick: () => this.openPhoto(p.id) },
      el('div', { class: 'pframe', style: `aspect-ratio: ${p.width} / ${p.height}` },
        el('img', { src: `/api/items/${p.id}/thumb?size=384`, alt: p.name, loading: 'lazy' }), ...boxes),
      el('figcaption', { class: 'small muted', text: `${p.name} · ${p.boxes.length} box${p.boxes.length === 1 ? '' : 'es'}${unnamed ? ` · ${unnamed} unnamed` : ''}` }));
  }

  // -- one photo -----------------------------------------------------------------------------
  /** Open the photo ``id`` large (or the photo a crop ``id`` was cut from, with that box selected). */
  async openPhoto(id) {
    this.root.hidden = false;
    let p;
    try { p = await getJSON(`/api/photos/${id}`); } catch (e) { this._say(e.message, 'error'); return; }
    this.grid.hidden = true;
    this.one.hidden = false;
    $('#photos-back', this.root).hidden = false;
    $('#photos-filters', this.root).hidden = true;
    $('#photos-title', this.root).textContent = p.name;
    if (this.img.dataset.photo !== p.id) {
      this.img.dataset.photo = p.id;
      this.img.src = `/api/items/${p.id}/image`;
    }
    this.selected = p.focus || null;
    this._set(p);
    this._say('');
  }

  /** The next (or previous) photo of the grid, for a curator who works photo by photo. */
  step(delta) {
    const list = this.photos || [];
    const at = list.findIndex((q) => q.id === this.photo.id);
    const next = list[at + delta];
    if (next) this.openPhoto(next.id); else this._say(delta > 0 ? 'the last photo of the list' : 'the first photo of the list');
  }

  _set(p) {
    this.photo = p;
    if (this.selected && !p.boxes.some((b) => b.id === this.selected)) this.selected = null;
    this.stage.style.aspectRatio = `${p.width} / ${p.height}`;
    this._draw();
    this._history();
  }

  _draw() {
    const p = this.photo;
    this.layer.replaceChildren(...p.boxes.map((b) => {
      const sel = b.id === this.selected;
      const d = el('div', {
        class: `box${sel ? ' sel' : ''}${b.label ? ' named' : ''} ${b.origin}`, 'data-box': b.id, style: pct(b.bbox, p),
        title: `${b.label || 'unnamed'} · ${b.origin}${b.score != null ? ` · score ${b.score}` : ''}`,
      }, el('span', { class: 'tag', text: b.label || (b.score != null ? `? ${b.score}` : '?') }));
      if (sel) for (const e of EDGES) d.append(el('b', { class: `h h-${e}`, 'data-edge': e }));
      return d;
    }));
    const b = this._sel();
    $('#photo-delete', this.root).disabled = !b;
    const name = $('#photo-name', this.root);
    name.disabled = !b;
    name.placeholder = b ? 'name this box (Enter)' : 'select a box to name it';
    if (!b) $('#photo-suggestion', this.root).textContent = '';
    $('#photo-count', this.root).textContent = `${p.boxes.length} box${p.boxes.length === 1 ? '' : 'es'} · revision ${p.version}`;
  }

  _sel() { return this.photo && this.photo.boxes.find((b) => b.id === this.selected); }

  async _history() {
    const p = this.photo;
    try {
      const h = await getJSON(`/api/photos/${p.id}/history`);
      if (this.photo !== p) return;
      $('#photo-history', this.root).replaceChildren(...h.history.map((e) => el('li', { class: e.in_force === false ? 'undone' : '' },
        el('span', { class: 'when', text: new Date(e.at * 1000).toLocaleString() }),
        el('span', { class: 'what', text: `${e.op}${e.target ? ` of #${e.target}` : ''} by ${e.user}` }),
        el('span', { class: 'muted', text: `#${e.event_id}` }))));
    } catch (_) { /* the history is a convenience; the boxes are shown */ }
  }

  _cycle(step) {
    const boxes = this.photo.boxes;
    if (!boxes.length) return;
    const at = boxes.findIndex((b) => b.id === this.selected);
    this.select(boxes[(at + step + boxes.length) % boxes.length].id);
  }

  select(id) {
    this.selected = id;
    this._draw();
    const b = this._sel();
    const name = $('#photo-name', this.root);
    name.value = b && b.label ? b.label : '';
    if (b && !b.label) this._suggest(b.id);
  }

  async _suggest(boxId) {
    const out = $('#photo-suggestion', this.root);
    out.textContent = '';
    this._cancelSuggest();
    const ask = new AbortController();
    this._asking = ask;
    try {
      const r = await getJSON(`/api/photos/${this.photo.id}/boxes/${boxId}/suggest`, { signal: ask.signal });
      if (this.selected === boxId && r.suggestion) this._offer(r.suggestion);
    } catch (_) { /* no suggestion */ } finally {
      if (this._asking === ask) this._asking = null;
    }
  }

  /** A revision or an undo may remove the box a suggestion is being asked for: the question is
   * dropped before the change is sent, so its answer (404 once the box is gone) never arrives. */
  _cancelSuggest() {
    if (this._asking) this._asking.abort();
    this._asking = null;
  }

  _offer(s) {
    $('#photo-suggestion', this.root).textContent = `suggested: ${s.label} (${s.source}, ${s.score})`;
    const name = $('#photo-name', this.root);
    if (!name.value) { name.value = s.label; name.select(); }
  }

  // -- pointer: select, drag edges, draw ------------------------------------------------------
  _px(ev) {
    const r = this.img.getBoundingClientRect();
    const k = this.photo.width / r.width;
    return [(ev.clientX - r.left) * k, (ev.clientY - r.top) * k];
  }

  _down(ev) {
    if (!this.photo || this.busy || ev.button !== 0) return;
    const edge = ev.target.dataset && ev.target.dataset.edge;
    const boxEl = ev.target.closest && ev.target.closest('.box');
    ev.preventDefault();
    if (this.mode === 'draw') {
      const [x, y] = this._px(ev);
      this.drag = { kind: 'draw', x0: x, y0: y, box: [x, y, 0, 0] };
      this.rubber = el('div', { class: 'box drawing' });
      this.layer.append(this.rubber);
      return;
    }
    if (edge && boxEl) {
      const b = this._sel();
      this.drag = { kind: 'edge', edge, start: this._px(ev), orig: b.bbox.slice(), box: b.bbox.slice(), el: boxEl };
      this.mode = 'drag';
      return;
    }
    if (boxEl) this.select(boxEl.dataset.box);
    else this.select(null);
  }

  _move(ev) {
    const d = this.drag;
    if (!d) return;
    const [x, y] = this._px(ev);
    if (d.kind === 'draw') {
      d.box = [Math.min(d.x0, x), Math.min(d.y0, y), Math.abs(x - d.x0), Math.abs(y - d.y0)];
      this.rubber.style.cssText = pct(d.box, this.photo);
      return;
    }
    let [bx, by, bw, bh] = d.orig;
    const dx = x - d.start[0];
    const dy = y - d.start[1];
    if (d.edge.includes('w')) { bx += dx; bw -= dx; }
    if (d.edge.includes('e')) bw += dx;
    if (d.edge.includes('n')) { by += dy; bh -= dy; }
    if (d.edge.includes('s')) bh += dy;
    d.box = [bx, by, Math.max(1, bw), Math.max(1, bh)];
    d.el.style.cssText = pct(d.box, this.photo);
  }

  async _up() {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    const box = d.box.map((v) => Math.round(v));
    if (d.kind === 'draw') {
      this.rubber.remove();
      this.mode = 'idle';
      this.stage.classList.remove('drawing');
      if (box[2] < 2 && box[3] < 2) return;
      await this.drawBox(box);
    } else {
      this.mode = 'idle';
      if (box.every((v, i) => v === d.orig[i])) return;
      await this.adjust(this.selected, box);
    }
  }

  startDraw() {
    if (!this.photo || !this._canWrite()) return;
    this.mode = 'draw';
    this.stage.classList.add('drawing');
    this._say('drag on the photo to draw the box the detector missed (Esc: cancel)');
  }

  escape() {
    if (this.mode === 'draw') { this.mode = 'idle'; this.stage.classList.remove('drawing'); this._say(''); return; }
    if (this.photo && this.selected) { this.select(null); return; }
    if (this.photo) { this.back(); return; }
    this.close();
  }

  back() { this.list(); }

  close() {
    this.root.hidden = true;
    this.photo = null;
    if (this.changed) { this.changed = false; this.onChanged(); }
  }

  _canWrite() {
    if (this.store.canWrite) return true;
    toast(`your role (${this.store.user.role}) may not revise boxes`, 'error');
    return false;
  }

  // -- revisions -----------------------------------------------------------------------------
  async _revise(path, body, what) {
    if (this.busy || !this._canWrite()) return null;
    this._cancelSuggest();
    this.busy = true;
    this.root.classList.add('busy');
    this._say(`${what}…`);
    try {
      const res = await postJSON(`/api/photos/${this.photo.id}${path}`, { base: this.photo.version, ...body });
      this.changed = true;
      if (res.box) this.selected = res.box;
      this._set(res.photo);
      this._say(`${what}: done (event #${res.event_id})`);
      return res;
    } catch (e) {
      this._say(e.message, 'error');
      if (e.status === 409) await this.openPhoto(this.photo.id);
      else this._draw();
      return null;
    } finally {
      this.busy = false;
      this.root.classList.remove('busy');
    }
  }

  async deleteSelected() {
    const b = this._sel();
    if (!b) { this._say('select a box first (click it, or Tab)', 'error'); return; }
    await this._revise(`/boxes/${b.id}/delete`, {}, 'delete box');
  }

  async adjust(id, bbox) { await this._revise(`/boxes/${id}/adjust`, { bbox }, 'adjust box'); }

  async drawBox(bbox) {
    const res = await this._revise('/boxes', { bbox }, 'new box');
    if (!res) return;
    this._draw();
    const name = $('#photo-name', this.root);
    name.value = '';
    if (res.suggestion) this._offer(res.suggestion);
    name.focus();
  }

  async nameSelected() {
    const b = this._sel();
    const label = $('#photo-name', this.root).value.trim();
    if (!b || !label) return;
    const res = await this._revise(`/boxes/${b.id}/name`, { label }, `name "${label}"`);
    if (res) $('#photo-name', this.root).blur();
  }

  async undo(redo) {
    if (this.busy || !this._canWrite()) return;
    this._cancelSuggest();
    this.busy = true;
    try {
      const res = await postJSON(`/api/photos/${redo ? 'redo' : 'undo'}`, {});
      this.changed = true;
      this._say(`${redo ? 'redone' : 'undone'} (event #${res.event_id})`);
    } catch (e) {
      this._say(e.message, 'error');
    } finally {
      this.busy = false;
    }
    if (this.photo) await this.openPhoto(this.photo.id); else await this.list();
  }
}

/** A box as CSS position and size in percent of its photo. */
function pct([x, y, w, h], p) {
  const f = (v) => `${(v * 100).toFixed(3)}%`;
  return `left: ${f(x / p.width)}; top: ${f(y / p.height)}; width: ${f(w / p.width)}; height: ${f(h / p.height)}`;
}
