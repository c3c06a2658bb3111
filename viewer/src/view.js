// The map on screen: renders on demand, pans and zooms, lassos, and selects a cluster by click.

import { Camera } from './camera.js';
import { Renderer } from './renderer.js';
import { ThumbLayer } from './thumbs.js';
import { Colorizer } from './colors.js';
import { Grid } from './spatial.js';
import { LassoPath, pointsInPolygon } from './lasso.js';
import { modeFromEvent, REPLACE } from './selection.js';
import { $ } from './ui.js';

const THUMBS_MAX_VISIBLE = 2500;
const THUMBS_MIN_PX = 20;
const THUMBS_MIN_SPREAD = 0.3;

export class MapView {
  constructor(store, { canvas, overlay, hud, renderMode = 'auto' }) {
    this.store = store;
    this.canvas = canvas;
    this.overlay = overlay;
    this.octx = overlay.getContext('2d');
    this.hud = hud;
    this.camera = new Camera();
    this.renderer = new Renderer(canvas, { mode: renderMode });
    this.colorizer = new Colorizer();
    this.colors = null;
    this.colorsDirty = true;
    this.pending = false;
    this.lasso = null;
    this.stats = { frames: 0, lastFrameMs: 0, visible: 0, thumbs: null };
    this.lastLasso = null;
    this._bindInput();
    new ResizeObserver(() => this._resize()).observe(canvas.parentElement);
    this._resize();
  }

  setMap() {
    const m = this.store.map;
    this.grid = new Grid(m.x, m.y, m.cellStart, m.grid);
    this.renderer.setPoints(m.x, m.y);
    this.colors = new Uint32Array(m.n);
    if (this.thumbs) this.thumbs.dispose();
    const base = `/api/maps/${encodeURIComponent(m.name)}/atlas`;
    this.thumbs = new ThumbLayer(this.renderer, m.atlas, (lod, k) => `${base}/${lod}/${k}.jpg?v=${m.etag}`, () => this.requestRender());
    this.camera.fit();
    this.colorsDirty = true;
  }

  _resize() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.camera.resize(box.width, box.height);
    this.renderer.resize(box.width, box.height, dpr);
    this.overlay.width = Math.round(box.width * dpr);
    this.overlay.height = Math.round(box.height * dpr);
    this.octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.requestRender();
  }

  invalidateColors() { this.colorsDirty = true; this.requestRender(); }

  requestRender() {
    if (this.pending || !this.store.map) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  _updateColors() {
    const s = this.store;
    this.colorizer.compute(this.colors, s.map, s.labels, { mode: s.mode, onlyUnlabelled: s.onlyUnlabelled, selection: s.selection, sub: s.sub });
    this.renderer.setColors(this.colors);
    this.renderer.setOnTop(s.selection.count ? s.selection.list() : null);
    this.colorsDirty = false;
  }

  /** Size of points in CSS pixels, from how many are on screen. */
  pointSize(visible) {
    const area = this.camera.width * this.camera.height;
    return Math.min(10, Math.max(1, Math.sqrt(area / Math.max(visible, 1)) * 0.5));
  }

  /** Draw one frame now; returns its time in ms (``sync`` waits for the GPU to finish). */
  render({ sync = false } = {}) {
    const s = this.store;
    if (!s.map) return 0;
    const t0 = performance.now();
    if (this.colorsDirty) this._updateColors();
    const [u0, v0, u1, v1] = this.camera.visible();
    const ranges = this.grid.ranges(u0, v0, u1, v1);
    let visible = 0;
    for (const r of ranges) visible += r[1];
    const size = this.pointSize(visible);
    this.renderer.drawPoints(this.camera, ranges, size);
    const thumbPx = Math.min(128, 0.8 * Math.sqrt((this.camera.width * this.camera.height) / Math.max(visible, 1)));
    this.stats.thumbs = null;
    const px = s.thumbnails && visible <= THUMBS_MAX_VISIBLE ? this._thumbSize(ranges, visible, thumbPx) : 0;
    if (px) {
      this.stats.thumbs = this.thumbs.draw(this.camera, ranges, px, s.selection.count > 0);
      this.stats.thumbs.px = px;
    }
    if (sync) this.renderer.sync();
    const ms = performance.now() - t0;
    this.stats.frames++;
    this.stats.lastFrameMs = ms;
    this.stats.visible = visible;
    this.stats.pointSize = size;
    this._drawOverlay();
    return ms;
  }

  /** The thumbnail size (CSS px) for the points on screen, or 0 for none: start from the size the
   * point count allows and shrink while they would pile up (20 overlapping thumbnails read worse
   * than points), down to THUMBS_MIN_PX. */
  _thumbSize(ranges, visible, px) {
    for (; px >= THUMBS_MIN_PX; px /= 1.35) if (this._spreadOut(ranges, visible, px)) return px;
    return 0;
  }

  /** Whether the points occupy enough thumbnail-sized screen cells for thumbnails of ``px``. */
  _spreadOut(ranges, visible, px) {
    const m = this.store.map, cam = this.camera;
    const cells = new Set();
    const s = cam.scale / 65535, ox = cam.width / 2 - cam.cx * cam.scale, oy = cam.height / 2 + cam.cy * cam.scale;
    for (const [first, count] of ranges) {
      for (let i = first; i < first + count; i++) {
        const cx = Math.floor((m.x[i] * s + ox) / px), cy = Math.floor((oy - m.y[i] * s) / px);
        cells.add(cx * 65536 + cy);
      }
    }
    return cells.size >= THUMBS_MIN_SPREAD * visible;
  }

  _drawOverlay() {
    const c = this.octx;
    c.clearRect(0, 0, this.camera.width, this.camera.height);
    if (this.lasso && this.lasso.size > 1) {
      const p = this.lasso.points;
      c.beginPath();
      c.moveTo(p[0], p[1]);
      for (let k = 2; k < p.length; k += 2) c.lineTo(p[k], p[k + 1]);
      c.closePath();
      c.fillStyle = 'rgba(255, 214, 10, 0.08)';
      c.fill();
      c.setLineDash([6, 4]);
      c.strokeStyle = '#ffd60a';
      c.lineWidth = 1.5;
      c.stroke();
      c.setLineDash([]);
    }
  }

  // -- input ------------------------------------------------------------------------------
  _bindInput() {
    const el = this.overlay.parentElement;
    let down = null;
    el.addEventListener('pointerleave', () => { $('#tooltip').hidden = true; });
    el.addEventListener('pointerdown', (ev) => {
      $('#tooltip').hidden = true;
      if (ev.button !== 0 || !this.store.map) return;
      el.setPointerCapture(ev.pointerId);
      const [x, y] = this._xy(ev);
      const lasso = this.store.tool === 'lasso' || ev.ctrlKey || ev.metaKey;
      down = { x, y, moved: false, lasso, mode: modeFromEvent(ev) };
      if (lasso) { this.lasso = new LassoPath(); this.lasso.start(x, y); }
    });
    el.addEventListener('pointermove', (ev) => {
      if (!down) { this._hover(ev); return; }
      const [x, y] = this._xy(ev);
      if (Math.abs(x - down.x) + Math.abs(y - down.y) > 3) down.moved = true;
      if (down.lasso) { this.lasso.add(x, y); this._drawOverlay(); return; }
      if (down.moved) {
        this.camera.panBy(x - (down.lx ?? down.x), y - (down.ly ?? down.y));
        down.lx = x; down.ly = y;
        this.requestRender();
      }
    });
    el.addEventListener('pointerup', (ev) => {
      if (!down) return;
      const d = down;
      down = null;
      if (d.lasso && d.moved && this.lasso.size >= 3) this._finishLasso(ev, d.mode);
      else if (!d.moved) this._click(ev, d.mode);
      this.lasso = null;
      this._drawOverlay();
    });
    el.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const [x, y] = this._xy(ev);
      this.camera.zoomAt(x, y, Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)));
      this.requestRender();
    }, { passive: false });
    el.addEventListener('dblclick', (ev) => {
      const [x, y] = this._xy(ev);
      this.camera.zoomAt(x, y, 2);
      this.requestRender();
    });
  }

  _xy(ev) {
    const r = this.overlay.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  _eligible() {
    const s = this.store;
    if (!s.onlyUnlabelled) return null;
    const lab = s.labels.label;
    return (i) => lab[i] === 0;
  }

  /** Lasso: polygon -> exact point-in-polygon -> selection; the count shows before the redraw. */
  _finishLasso(ev, mode) {
    const t0 = ev.timeStamp || performance.now();
    const p = this.lasso.points;
    const poly = new Float64Array(p.length);
    for (let k = 0; k < p.length; k += 2) {
      const [u, v] = this.camera.toWorld(p[k], p[k + 1]);
      poly[k] = u * 65535; poly[k + 1] = v * 65535;
    }
    let u0 = Infinity, v0 = Infinity, u1 = -Infinity, v1 = -Infinity;
    for (let k = 0; k < poly.length; k += 2) {
      u0 = Math.min(u0, poly[k]); u1 = Math.max(u1, poly[k]);
      v0 = Math.min(v0, poly[k + 1]); v1 = Math.max(v1, poly[k + 1]);
    }
    const ranges = this.grid.ranges(u0 / 65535, v0 / 65535, u1 / 65535, v1 / 65535);
    const m = this.store.map;
    const hits = pointsInPolygon(poly, m.x, m.y, ranges, this._eligible());
    const tHit = performance.now();
    this.store.select(hits, mode);
    const tCount = performance.now();
    this.lastLasso = { polygon: Array.from(poly), hits: hits.length, selected: this.store.selection.count, pipMs: tHit - t0, countMs: tCount - t0, frameMs: null, start: t0 };
    requestAnimationFrame(() => {
      this.render({ sync: true });
      this.lastLasso.frameMs = performance.now() - t0;
    });
  }

  /** Click: select the cluster under the pointer (noise: just that point). */
  _click(ev, mode) {
    const [x, y] = this._xy(ev);
    const i = this.pick(x, y);
    if (i < 0) { if (mode === REPLACE) this.store.select([], REPLACE); return; }
    this.selectClusterOf(i, mode);
  }

  selectClusterOf(i, mode) {
    const m = this.store.map;
    const c = m.cluster[i];
    if (c === 0) { this.store.select([i], mode); return; }
    const elig = this._eligible();
    const out = [];
    for (let j = 0; j < m.n; j++) if (m.cluster[j] === c && (!elig || elig(j))) out.push(j);
    this.store.select(out, mode);
  }

  /** The point under screen position (x, y) within 8 px, or -1. */
  pick(x, y) {
    const [u, v] = this.camera.toWorld(x, y);
    const r = Math.max(8, this.stats.pointSize || 0) / this.camera.scale;
    const elig = this._eligible();
    const colors = this.colors;
    return this.grid.nearest(u, v, r, (i) => colors[i] !== 0 && (!elig || elig(i)));
  }

  _hover(ev) {
    if (!this.store.map || !this.hud) return;
    const now = performance.now();
    if (now - (this._lastHover || 0) < 60) return;
    this._lastHover = now;
    const [x, y] = this._xy(ev);
    const i = this.pick(x, y);
    const tip = $('#tooltip');
    if (i < 0) { tip.hidden = true; return; }
    const s = this.store;
    const c = s.map.cluster[i];
    const name = s.labelName(s.labels.label[i]);
    tip.textContent = `${c ? `cluster ${c - 1}` : 'noise'} · ${name ? `"${name}"` : 'unlabelled'}${s.labels.state[i] & 1 ? ' · excluded' : ''}${s.map.flags[i] & 1 ? ' · new' : ''}`;
    tip.style.left = `${x + 14}px`;
    tip.style.top = `${y + 10}px`;
    tip.hidden = false;
  }

  zoomToSelection() {
    const s = this.store;
    const list = s.selection.list();
    if (!list.length) { this.camera.fit(); this.requestRender(); return; }
    let u0 = 1, v0 = 1, u1 = 0, v1 = 0;
    for (const i of list) {
      const u = s.map.x[i] / 65535, v = s.map.y[i] / 65535;
      if (u < u0) u0 = u; if (u > u1) u1 = u; if (v < v0) v0 = v; if (v > v1) v1 = v;
    }
    this.camera.cx = (u0 + u1) / 2;
    this.camera.cy = (v0 + v1) / 2;
    this.camera.zoom = Math.min(4096, Math.max(1, 0.85 / Math.max(u1 - u0, v1 - v0, 1e-4)));
    this.requestRender();
  }

  hudText(text) { if (this.hud) this.hud.textContent = text; }
}

