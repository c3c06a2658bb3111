// Selection algebra over point indices: replace, add (shift) or subtract (alt), plus the
// curator's exclusions inside a selection. Pure logic, no DOM.

export const REPLACE = 'replace';
export const ADD = 'add';
export const SUBTRACT = 'subtract';

export function modeFromEvent(ev) {
  if (ev.altKey) return SUBTRACT;
  if (ev.shiftKey) return ADD;
  return REPLACE;
}

export class Selection {
  constructor(n) {
    this.n = n;
    this.mask = new Uint8Array(n); // 1 = selected
    this.count = 0;
    this.excluded = new Set(); // selected points the curator took out (named "not this")
    // Selected points left out of this naming without a verdict (the tiles a cut "exclude this and
    // every less sure" takes): right and wrong members alike, so they are not sent as "not this".
    this.skipped = new Set();
    this._list = null;
    this.serial = 0; // bumps on every change (for cheap change checks)
  }

  /** Combine ``indices`` (any iterable of point indices) with the selection. */
  apply(indices, mode = REPLACE) {
    const m = this.mask;
    if (mode === REPLACE) { m.fill(0); this.count = 0; this.excluded.clear(); this.skipped.clear(); }
    let c = this.count;
    if (mode === SUBTRACT) {
      for (const i of indices) { if (m[i]) { m[i] = 0; c--; this.excluded.delete(i); this.skipped.delete(i); } }
    } else {
      for (const i of indices) { if (!m[i]) { m[i] = 1; c++; } }
    }
    this.count = c;
    this._changed();
  }

  clear() { this.apply([], REPLACE); }

  has(i) { return this.mask[i] === 1; }

  /** Selected indices, ascending (cached until the next change). */
  list() {
    if (!this._list) {
      const out = new Uint32Array(this.count);
      const m = this.mask;
      let k = 0;
      for (let i = 0; i < m.length; i++) if (m[i]) out[k++] = i;
      this._list = out;
    }
    return this._list;
  }

  exclude(indices) { for (const i of indices) if (this.mask[i]) { this.excluded.add(i); this.skipped.delete(i); } this._changed(); }

  /** Leave ``indices`` out of this naming without saying they are not its label. */
  skip(indices) { for (const i of indices) if (this.mask[i] && !this.excluded.has(i)) this.skipped.add(i); this._changed(); }

  include(indices) { for (const i of indices) { this.excluded.delete(i); this.skipped.delete(i); } this._changed(); }

  /** Taken out of the naming, either way. */
  isOut(i) { return this.excluded.has(i) || this.skipped.has(i); }

  /** The points a naming action labels: selected, neither excluded nor skipped. */
  toName() {
    const out = [];
    for (const i of this.list()) if (!this.isOut(i)) out.push(i);
    return out;
  }

  _changed() { this._list = null; this.serial++; }
}

/** Order selected points least sure first: highest outlier score, then lowest membership. */
export function leastSureFirst(indices, outlier, probability) {
  // Counting sort on a 16-bit key: O(n) for any selection size.
  const key = new Uint16Array(indices.length);
  const counts = new Uint32Array(65537);
  for (let j = 0; j < indices.length; j++) {
    const i = indices[j];
    const k = 65535 - ((outlier[i] << 8) | (255 - probability[i]));
    key[j] = k;
    counts[k + 1]++;
  }
  for (let k = 1; k < counts.length; k++) counts[k] += counts[k - 1];
  const out = new Uint32Array(indices.length);
  for (let j = 0; j < indices.length; j++) out[counts[key[j]]++] = indices[j];
  return out;
}
