// The CPU rasteriser for points, used when WebGL runs in software (SwiftShader, llvmpipe): there
// a tight loop writing pixels into a typed array beats emulated point sprites by an order of
// magnitude. Its image goes to the screen as one WebGL texture, under the thumbnail layer.

import { MARK_RGB, BACKGROUND, ringed, hasRing } from './colors.js';

const BG = ((255 << 24) | (BACKGROUND[2] << 16) | (BACKGROUND[1] << 8) | BACKGROUND[0]) >>> 0;
const MARK32 = {};
for (const [k, rgb] of Object.entries(MARK_RGB)) MARK32[k] = ((255 << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0;

/** Offsets of a disc (and its ring) of diameter ``size`` pixels. */
function stamp(size) {
  const r = size / 2;
  const body = [], ring = [];
  const lo = -Math.floor(size / 2), hi = lo + size - 1;
  for (let dy = lo; dy <= hi; dy++) {
    for (let dx = lo; dx <= hi; dx++) {
      const cx = dx + 0.5 - (size % 2 ? 0.5 : 0), cy = dy + 0.5 - (size % 2 ? 0.5 : 0);
      const d = Math.sqrt(cx * cx + cy * cy);
      if (size < 3 || d <= r) {
        body.push([dx, dy]);
        if (size >= 4 && d > r - 1.25) ring.push([dx, dy]);
      }
    }
  }
  return { body, ring, lo, hi };
}

export class Splatter {
  constructor() {
    this.w = 0; this.h = 0;
    this.fb = null; this.bytes = null;
    this._stamps = new Map();
  }

  resize(w, h) {
    if (w === this.w && h === this.h) return;
    this.w = w; this.h = h;
    this.fb = new Uint32Array(w * h);
    this.bytes = new Uint8Array(this.fb.buffer);
  }

  _stamp(size) {
    let s = this._stamps.get(size);
    if (!s) { s = stamp(size); this._stamps.set(size, s); }
    return s;
  }

  /**
   * Draw points of ``ranges`` ([first, count]) then the ``onTop`` indices. ``t`` maps positions
   * to device pixels: px = x * t[0] + t[1], py = y * t[2] + t[3].
   */
  draw(x, y, colors, ranges, onTop, t, size) {
    const fb = this.fb, w = this.w, h = this.h;
    fb.fill(BG);
    const [ax, bx, ay, by] = t;
    size = Math.max(1, Math.round(size));
    if (size === 1) {
      for (const [first, count] of ranges) {
        for (let i = first, end = first + count; i < end; i++) {
          const c = colors[i];
          if (c === 0) continue;
          const px = (x[i] * ax + bx) | 0, py = (y[i] * ay + by) | 0;
          if (px < 0 || py < 0 || px >= w || py >= h) continue;
          const a = c >>> 24;
          fb[py * w + px] = ringed(a) ? MARK32[a] : (c | 0xff000000) >>> 0;
        }
      }
    } else if (size === 2) {
      const w1 = w - 1, h1 = h - 1;
      for (const [first, count] of ranges) {
        for (let i = first, end = first + count; i < end; i++) {
          const c = colors[i];
          if (c === 0) continue;
          const px = (x[i] * ax + bx - 0.5) | 0, py = (y[i] * ay + by - 0.5) | 0;
          if (px < 0 || py < 0 || px >= w1 || py >= h1) continue;
          const a = c >>> 24;
          const v = ringed(a) ? MARK32[a] : (c | 0xff000000) >>> 0;
          const o = py * w + px;
          fb[o] = v; fb[o + 1] = v; fb[o + w] = v; fb[o + w + 1] = v;
        }
      }
    } else {
      for (const [first, count] of ranges) this._drawList(x, y, colors, null, first, first + count, t, size);
    }
    if (onTop && onTop.length) this._drawList(x, y, colors, onTop, 0, onTop.length, t, Math.max(size, 2));
  }

  _drawList(x, y, colors, list, from, to, t, size) {
    const fb = this.fb, w = this.w, h = this.h;
    const [ax, bx, ay, by] = t;
    const { body, ring, lo, hi } = this._stamp(size);
    const bodyOff = body.map(([dx, dy]) => dy * w + dx), ringOff = ring.map(([dx, dy]) => dy * w + dx);
    for (let k = from; k < to; k++) {
      const i = list ? list[k] : k;
      const c = colors[i];
      if (c === 0) continue;
      const px = Math.round(x[i] * ax + bx), py = Math.round(y[i] * ay + by);
      if (px + lo < 0 || py + lo < 0 || px + hi >= w || py + hi >= h) continue;
      const a = c >>> 24;
      const o = py * w + px;
      const fill = (c | 0xff000000) >>> 0;
      if (!hasRing(a) || size < 4) {
        const v = ringed(a) ? MARK32[a] : fill;
        for (let q = 0; q < bodyOff.length; q++) fb[o + bodyOff[q]] = v;
      } else {
        for (let q = 0; q < bodyOff.length; q++) fb[o + bodyOff[q]] = fill;
        const r = MARK32[a];
        for (let q = 0; q < ringOff.length; q++) fb[o + ringOff[q]] = r;
      }
    }
  }
}
