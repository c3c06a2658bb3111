// One packed RGBA colour per point, recomputed only when colouring inputs change (mode, labels,
// selection, filter), so a frame only moves and draws. The alpha byte carries the point's mark:
// 255 plain (labelled), MARK_UNLABELLED, MARK_EXCLUDED, MARK_NEW, MARK_SELECTED, MARK_OUT, 0 hidden.

export const MARK_PLAIN = 255;
export const MARK_EXCLUDED = 254; // excluded from a label, now unlabelled: red ring
export const MARK_NEW = 253; // placed by a map update: white ring
export const MARK_SELECTED = 252; // selected: yellow ring
export const MARK_OUT = 251; // selected but taken out of the naming: red fill
export const MARK_UNLABELLED = 250; // plain, not labelled yet (thin thumbnail border)

/** Marks that recolour a whole point when it is too small for a ring. */
export function ringed(mark) { return mark === MARK_EXCLUDED || mark === MARK_NEW || mark === MARK_OUT; }

/** Marks drawn as a ring on points large enough for one (the ringed ones, and selection). */
export function hasRing(mark) { return ringed(mark) || mark === MARK_SELECTED; }

export const BACKGROUND = [17, 19, 24];
const NOISE = [92, 96, 104];
const UNLABELLED = [88, 92, 102];

/** A colour per id, spread around the hue circle by the golden angle (stable across sessions). */
export function paletteColor(id) {
  const h = ((id * 0.618033988749895) % 1) * 360;
  const s = 0.62 + 0.25 * (((id * 7) % 5) / 4);
  const l = 0.50 + 0.12 * (((id * 3) % 4) / 3 - 0.5);
  return hsl(h, s, l);
}

function hsl(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function pack(rgb, a) { return ((a << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0; }

function mix(rgb, to, t) {
  return [0, 1, 2].map((k) => Math.round(rgb[k] * (1 - t) + to[k] * t));
}

/** Packed colours for ``count`` ids (cached per mode). */
function table(count, fn) {
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = fn(i);
  return out;
}

export class Colorizer {
  constructor() { this._cache = new Map(); }

  _table(key, count, fn) {
    let t = this._cache.get(key);
    if (!t || t.length < count) { t = table(Math.max(count, 64), fn); this._cache.set(key, t); }
    return t;
  }

  /**
   * Fill ``out`` (Uint32Array, one per point). ``opts``: mode 'cluster' | 'label', onlyUnlabelled,
   * selection (Selection or null), sub (Int16Array sub-cluster per point, -1 none, or null).
   */
  compute(out, map, labels, opts) {
    const n = map.n;
    const cl = map.cluster, lab = labels.label, st = labels.state, fl = map.flags;
    const byLabel = opts.mode === 'label';
    let maxC = 0; for (let i = 0; i < cl.length; i++) if (cl[i] > maxC) maxC = cl[i];
    let maxL = 0; for (let i = 0; i < lab.length; i++) if (lab[i] > maxL) maxL = lab[i];
    // [labelled, unlabelled] variants for clusters; cluster value 0 is noise
    const clusterOn = this._table('c1', maxC + 1, (c) => pack(c === 0 ? NOISE : paletteColor(c - 1), 255));
    const clusterOff = this._table('c0', maxC + 1, (c) => pack(mix(c === 0 ? NOISE : paletteColor(c - 1), BACKGROUND, 0.45), 255));
    const labelOn = this._table('l1', maxL + 1, (l) => pack(l === 0 ? UNLABELLED : paletteColor(l + 1000), 255));
    const sel = opts.selection && opts.selection.count ? opts.selection : null;
    const mask = sel ? sel.mask : null;
    const sub = opts.sub || null;
    const hide = !!opts.onlyUnlabelled;
    const on = byLabel ? labelOn : clusterOn; // colour tables for labelled points
    const off = byLabel ? labelOn : clusterOff; // ... and for unlabelled ones
    const onDim = mask ? dimTable(on) : on;
    const offDim = mask ? dimTable(off) : off;
    const RGB = 0x00ffffff;
    for (let i = 0; i < n; i++) {
      const l = lab[i];
      if (hide && l !== 0) { out[i] = 0; continue; }
      const k = byLabel ? l : cl[i];
      let a = l !== 0 ? MARK_PLAIN : MARK_UNLABELLED;
      if (st[i] & 1) a = MARK_EXCLUDED;
      else if (fl[i] & 1) a = MARK_NEW;
      let c;
      if (mask && mask[i]) {
        c = l !== 0 ? on[k] : off[k];
        if (sub && sub[i] >= 0) c = pack(paletteColor(sub[i] + 500), 255);
        a = sel.isOut(i) ? MARK_OUT : MARK_SELECTED;
      } else {
        c = l !== 0 ? onDim[k] : offDim[k];
      }
      out[i] = ((c & RGB) | (a << 24)) >>> 0;
    }
    return out;
  }
}

function dimTable(t) {
  const out = new Uint32Array(t.length);
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    out[i] = pack(mix([c & 255, (c >>> 8) & 255, (c >>> 16) & 255], BACKGROUND, 0.72), 255);
  }
  return out;
}

/** RGB (0..255) of a mark, for rings and tile borders. */
export const MARK_RGB = {
  [MARK_EXCLUDED]: [235, 64, 52],
  [MARK_NEW]: [255, 255, 255],
  [MARK_SELECTED]: [255, 214, 10],
  [MARK_OUT]: [235, 64, 52],
};
