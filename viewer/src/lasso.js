// Lasso selection: a free-hand polygon, and a fast exact point-in-polygon over the map.
//
// The polygon's bounding box is cut into a 256 x 256 raster. Cells that an edge touches are
// "boundary"; every other cell is wholly inside or wholly outside, decided once at its centre.
// Points in inside/outside cells are classified by one array lookup; only points in boundary
// cells run the exact even-odd test, against just the edges crossing their raster row.

const RES = 256;
const EPS = 1e-7;

/**
 * Indices of points inside ``poly`` (flat [x0, y0, x1, y1, ...] in the 0..65535 position space).
 * ``ranges`` lists [first, count] index ranges to consider (from the map grid); ``eligible``
 * (optional) returns false for points that must not be picked (hidden ones).
 */
export function pointsInPolygon(poly, x, y, ranges, eligible = null) {
  const nv = poly.length >> 1;
  if (nv < 3) return new Uint32Array(0);
  let minx = Infinity, miny = Infinity, maxx = -Infinity, maxy = -Infinity;
  for (let k = 0; k < nv; k++) {
    const px = poly[2 * k], py = poly[2 * k + 1];
    if (px < minx) minx = px; if (px > maxx) maxx = px;
    if (py < miny) miny = py; if (py > maxy) maxy = py;
  }
  const cw = Math.max((maxx - minx) / RES, 1e-9), ch = Math.max((maxy - miny) / RES, 1e-9);
  const cell = new Uint8Array(RES * RES); // 0 outside, 1 inside, 2 boundary
  const rowEdges = Array.from({ length: RES }, () => []);

  // 1. boundary cells, and the edges of each raster row
  for (let k = 0; k < nv; k++) {
    const x1 = poly[2 * k], y1 = poly[2 * k + 1];
    const j = (k + 1) % nv;
    const x2 = poly[2 * j], y2 = poly[2 * j + 1];
    const ya = Math.min(y1, y2), yb = Math.max(y1, y2);
    const r0 = clamp(Math.floor((ya - miny) / ch - EPS)), r1 = clamp(Math.floor((yb - miny) / ch + EPS));
    for (let r = r0; r <= r1; r++) {
      rowEdges[r].push(k);
      const lo = Math.max(ya, miny + r * ch), hi = Math.min(yb, miny + (r + 1) * ch);
      let xa, xb;
      if (y2 === y1) { xa = Math.min(x1, x2); xb = Math.max(x1, x2); } else {
        const xl = x1 + ((x2 - x1) * (lo - y1)) / (y2 - y1);
        const xh = x1 + ((x2 - x1) * (hi - y1)) / (y2 - y1);
        xa = Math.min(xl, xh); xb = Math.max(xl, xh);
      }
      const c0 = clamp(Math.floor((xa - minx) / cw - EPS)), c1 = clamp(Math.floor((xb - minx) / cw + EPS));
      for (let c = c0; c <= c1; c++) cell[r * RES + c] = 2;
    }
  }
  // 2. inside/outside for the other cells, from crossings of each row's centre line
  const xs = [];
  for (let r = 0; r < RES; r++) {
    const yc = miny + (r + 0.5) * ch;
    xs.length = 0;
    for (let k = 0; k < nv; k++) {
      const x1 = poly[2 * k], y1 = poly[2 * k + 1];
      const j = (k + 1) % nv;
      const x2 = poly[2 * j], y2 = poly[2 * j + 1];
      if ((y1 > yc) !== (y2 > yc)) xs.push(x1 + ((x2 - x1) * (yc - y1)) / (y2 - y1));
    }
    xs.sort((a, b) => a - b);
    let p = 0;
    for (let c = 0; c < RES; c++) {
      const xc = minx + (c + 0.5) * cw;
      while (p < xs.length && xs[p] <= xc) p++;
      const at = r * RES + c;
      if (cell[at] !== 2 && (p & 1)) cell[at] = 1;
    }
  }
  const edgesOf = rowEdges.map((list) => Int32Array.from(list));

  // 3. classify the points
  let out = new Uint32Array(1024);
  let n = 0;
  for (const [first, count] of ranges) {
    for (let i = first, end = first + count; i < end; i++) {
      const px = x[i], py = y[i];
      if (px < minx || px > maxx || py < miny || py > maxy) continue;
      const r = clamp(Math.floor((py - miny) / ch)), c = clamp(Math.floor((px - minx) / cw));
      const s = cell[r * RES + c];
      if (s === 0) continue;
      if (s === 2 && !insideExact(poly, nv, edgesOf[r], px, py)) continue;
      if (eligible && !eligible(i)) continue;
      if (n === out.length) { const g = new Uint32Array(n * 2); g.set(out); out = g; }
      out[n++] = i;
    }
  }
  return out.subarray(0, n);
}

function clamp(v) { return v < 0 ? 0 : v >= RES ? RES - 1 : v; }

function insideExact(poly, nv, edges, px, py) {
  let inside = false;
  for (let e = 0; e < edges.length; e++) {
    const k = edges[e];
    const x1 = poly[2 * k], y1 = poly[2 * k + 1];
    const j = k + 1 === nv ? 0 : k + 1;
    const x2 = poly[2 * j], y2 = poly[2 * j + 1];
    if ((y1 > py) !== (y2 > py) && px < x1 + ((x2 - x1) * (py - y1)) / (y2 - y1)) inside = !inside;
  }
  return inside;
}

/** The plain even-odd test over every edge (the reference the fast path must equal). */
export function pointsInPolygonBrute(poly, x, y, n) {
  const nv = poly.length >> 1;
  const all = Int32Array.from({ length: nv }, (_, k) => k);
  const out = [];
  for (let i = 0; i < n; i++) if (insideExact(poly, nv, all, x[i], y[i])) out.push(i);
  return Uint32Array.from(out);
}

/** Collects a free-hand polygon in screen pixels while the pointer is down. */
export class LassoPath {
  constructor() { this.points = []; }
  start(x, y) { this.points = [x, y]; }
  add(x, y) {
    const n = this.points.length;
    const dx = x - this.points[n - 2], dy = y - this.points[n - 1];
    if (dx * dx + dy * dy >= 4) this.points.push(x, y);
  }
  get size() { return this.points.length >> 1; }
}
