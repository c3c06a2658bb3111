// The map's grid of cells (points arrive sorted by cell, row by row): which index ranges a
// world rectangle covers, and which point is nearest a screen position.

export class Grid {
  constructor(x, y, cellStart, size) {
    this.x = x; this.y = y; // Uint16Array positions (0..65535)
    this.start = cellStart; // Uint32Array, size*size + 1
    this.size = size;
  }

  /** Contiguous [first, count] index ranges covering the world rectangle (u, v in 0..1). */
  ranges(u0, v0, u1, v1) {
    const g = this.size;
    const c0 = Math.max(0, Math.floor(u0 * g)), c1 = Math.min(g - 1, Math.floor(u1 * g));
    const r0 = Math.max(0, Math.floor(v0 * g)), r1 = Math.min(g - 1, Math.floor(v1 * g));
    const out = [];
    if (c0 > c1 || r0 > r1) return out;
    if (c0 === 0 && c1 === g - 1) { // whole rows: one range
      const a = this.start[r0 * g], b = this.start[(r1 + 1) * g];
      if (b > a) out.push([a, b - a]);
      return out;
    }
    for (let r = r0; r <= r1; r++) {
      const a = this.start[r * g + c0], b = this.start[r * g + c1 + 1];
      if (b > a) out.push([a, b - a]);
    }
    return out;
  }

  countIn(u0, v0, u1, v1) {
    let n = 0;
    for (const [, c] of this.ranges(u0, v0, u1, v1)) n += c;
    return n;
  }

  /** Index of the point nearest world (u, v) within ``radius`` world units, or -1. */
  nearest(u, v, radius, accept = null) {
    const qx = u * 65535, qy = v * 65535, qr = radius * 65535;
    let best = -1, bestD = qr * qr;
    for (const [first, count] of this.ranges(u - radius, v - radius, u + radius, v + radius)) {
      for (let i = first; i < first + count; i++) {
        const dx = this.x[i] - qx, dy = this.y[i] - qy;
        const d = dx * dx + dy * dy;
        if (d <= bestD && (!accept || accept(i))) { bestD = d; best = i; }
      }
    }
    return best;
  }
}
