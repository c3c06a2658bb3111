// The view: which part of the map is on screen. World coordinates are the map's normalised
// positions u, v in [0, 1] (v up); screen coordinates are CSS pixels (y down).

export class Camera {
  constructor() {
    this.cx = 0.5; this.cy = 0.5; // world point at the canvas centre
    this.zoom = 0.94; // 1 = the map's bounding square fills the shorter side
    this.width = 1; this.height = 1;
  }

  resize(width, height) { this.width = Math.max(1, width); this.height = Math.max(1, height); }

  /** CSS pixels per world unit. */
  get scale() { return Math.min(this.width, this.height) * this.zoom; }

  toScreen(u, v) {
    const s = this.scale;
    return [(u - this.cx) * s + this.width / 2, this.height / 2 - (v - this.cy) * s];
  }

  toWorld(x, y) {
    const s = this.scale;
    return [(x - this.width / 2) / s + this.cx, (this.height / 2 - y) / s + this.cy];
  }

  panBy(dx, dy) {
    const s = this.scale;
    this.cx -= dx / s;
    this.cy += dy / s;
  }

  /** Zoom by ``factor`` keeping the world point under (x, y) in place. */
  zoomAt(x, y, factor) {
    const [u, v] = this.toWorld(x, y);
    this.zoom = Math.min(4096, Math.max(0.25, this.zoom * factor));
    const [u2, v2] = this.toWorld(x, y);
    this.cx += u - u2;
    this.cy += v - v2;
  }

  /** The whole map, with a small margin. */
  fit() { this.cx = 0.5; this.cy = 0.5; this.zoom = 0.94; }

  /** Visible world rectangle [u0, v0, u1, v1]. */
  visible() {
    const [u0, v1] = this.toWorld(0, 0);
    const [u1, v0] = this.toWorld(this.width, this.height);
    return [u0, v0, u1, v1];
  }

  /** Clip-space transform for shaders: clip = world * (sx, sy) + (tx, ty), world in [0, 1]. */
  clipTransform() {
    const s = this.scale;
    const sx = (2 * s) / this.width;
    const sy = (2 * s) / this.height;
    return [sx, sy, -this.cx * sx, -this.cy * sy];
  }
}
