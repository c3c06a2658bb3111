// Points become their thumbnails when zoomed in. Thumbnails come in texture atlases (one JPEG
// holds a block of consecutive points, which are neighbours on the map), at two levels of
// detail; a bounded, least-recently-used set of atlas textures stays on the GPU, so a map of a
// million points never needs more than the budget below.

import { program } from './gl.js';
import { MARK_RGB, MARK_EXCLUDED, MARK_NEW, MARK_SELECTED, MARK_OUT, MARK_UNLABELLED } from './colors.js';

const BUDGET_BYTES = 192 * 1024 * 1024;
const MAX_LOADS = 6;

const col = (k) => `vec3(${MARK_RGB[k].map((v) => (v / 255).toFixed(3)).join(',')})`;
const VS = `#version 300 es
precision highp float;
layout(location=0) in float ax;
layout(location=1) in float ay;
layout(location=2) in vec4 acolor;
uniform vec4 uT;
uniform vec2 uHalf;
uniform int uBase;
uniform int uCols;
uniform float uCellUv;
out vec2 vUv;
out vec2 vLocal;
flat out vec4 vColor;
flat out int vMark;
void main() {
  int mark = int(acolor.a * 255.0 + 0.5);
  vec2 c = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1));
  if (mark == 0) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); return; }
  int slot = uBase + gl_InstanceID;
  vec2 cell = vec2(float(slot % uCols), float(slot / uCols));
  vUv = (cell + c) * uCellUv;
  vec2 center = vec2(ax, ay) * uT.xy + uT.zw;
  gl_Position = vec4(center + vec2(c.x * 2.0 - 1.0, 1.0 - c.y * 2.0) * uHalf, 0.0, 1.0);
  vLocal = c;
  vColor = acolor;
  vMark = mark;
}`;
const FS = `#version 300 es
precision mediump float;
in vec2 vUv;
in vec2 vLocal;
flat in vec4 vColor;
flat in int vMark;
uniform sampler2D uTex;
uniform float uBorder;
uniform int uDim;
out vec4 outColor;
void main() {
  vec2 e = min(vLocal, 1.0 - vLocal);
  float edge = min(e.x, e.y);
  vec3 c = texture(uTex, vUv).rgb;
  bool selected = vMark == ${MARK_SELECTED};
  if (uDim == 1 && !(selected || vMark == ${MARK_OUT})) c *= 0.35;
  // labelled: a border of its colour; unlabelled: a hairline; excluded / new / selected: their mark
  float border = vMark == ${MARK_UNLABELLED} ? uBorder * 0.5 : uBorder;
  if (edge < border) {
    vec3 b = vColor.rgb;
    if (vMark == ${MARK_EXCLUDED} || vMark == ${MARK_OUT}) b = ${col(MARK_EXCLUDED)};
    else if (vMark == ${MARK_NEW}) b = ${col(MARK_NEW)};
    else if (selected) b = ${col(MARK_SELECTED)};
    c = b;
  } else if (vMark == ${MARK_OUT}) {
    c = mix(c, ${col(MARK_EXCLUDED)}, 0.45);
  }
  outColor = vec4(c, 1.0);
}`;

export class ThumbLayer {
  /** ``layout``: the map's atlas levels [{lod, cell, size, per}]; ``url(lod, k)`` names an atlas. */
  constructor(renderer, layout, url, onLoad) {
    this.r = renderer;
    this.gl = renderer.gl;
    this.layout = layout;
    this.url = url;
    this.onLoad = onLoad;
    this.prog = program(this.gl, VS, FS, { ax: 0, ay: 1, acolor: 2 });
    this.vao = this.gl.createVertexArray();
    this.cache = new Map(); // key -> {tex, bytes, used}
    this.loading = new Map(); // key -> Promise
    this.frame = 0;
    this.failed = new Set();
  }

  lodFor(devicePx) {
    const lv = this.layout;
    return devicePx > lv[0].cell * 1.25 && lv.length > 1 ? lv[1] : lv[0];
  }

  _load(level, k) {
    const key = `${level.lod}:${k}`;
    if (this.cache.has(key) || this.loading.has(key) || this.failed.has(key) || this.loading.size >= MAX_LOADS) return;
    const img = new Image();
    img.decoding = 'async';
    const p = new Promise((resolve) => {
      img.onload = () => {
        const gl = this.gl;
        const tex = gl.createTexture();
        gl.bindTexture(gl.TEXTURE_2D, tex);
        gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, img);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
        this.cache.set(key, { tex, bytes: level.size * level.size * 4, used: this.frame });
        this.loading.delete(key);
        this._evict();
        resolve();
        this.onLoad();
      };
      img.onerror = () => { this.loading.delete(key); this.failed.add(key); resolve(); };
    });
    this.loading.set(key, p);
    img.src = this.url(level.lod, k);
  }

  _evict() {
    let total = 0;
    for (const v of this.cache.values()) total += v.bytes;
    if (total <= BUDGET_BYTES) return;
    const old = [...this.cache.entries()].sort((a, b) => a[1].used - b[1].used);
    for (const [key, v] of old) {
      if (total <= BUDGET_BYTES || v.used >= this.frame) break;
      this.gl.deleteTexture(v.tex);
      this.cache.delete(key);
      total -= v.bytes;
    }
  }

  get gpuBytes() { let t = 0; for (const v of this.cache.values()) t += v.bytes; return t; }

  /** Draw thumbnails of the points in ``ranges``, ``sizePx`` CSS pixels wide. */
  draw(camera, ranges, sizePx, dimOthers) {
    const gl = this.gl, r = this.r;
    this.frame++;
    const dev = sizePx * r.dpr;
    const level = this.lodFor(dev);
    const per = level.per, cols = level.size / level.cell;
    gl.useProgram(this.prog.program);
    const u = this.prog.uniforms;
    gl.uniform4fv(u.uT, camera.clipTransform());
    gl.uniform2f(u.uHalf, dev / r.canvas.width, dev / r.canvas.height);
    gl.uniform1i(u.uCols, cols);
    gl.uniform1f(u.uCellUv, level.cell / level.size);
    gl.uniform1f(u.uBorder, Math.min(0.14, (dev < 40 ? 2 : 3) / Math.max(dev, 1)));
    gl.uniform1i(u.uDim, dimOthers ? 1 : 0);
    gl.uniform1i(u.uTex, 0);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindVertexArray(this.vao);
    let drawn = 0, missing = 0;
    for (const [first, count] of ranges) {
      let i = first;
      const end = first + count;
      while (i < end) {
        const k = Math.floor(i / per);
        const stop = Math.min(end, (k + 1) * per);
        const entry = this.cache.get(`${level.lod}:${k}`);
        if (!entry) { missing++; this._load(level, k); i = stop; continue; }
        entry.used = this.frame;
        gl.bindTexture(gl.TEXTURE_2D, entry.tex);
        this._bind(i);
        gl.uniform1i(u.uBase, i - k * per);
        gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, stop - i);
        drawn += stop - i;
        i = stop;
      }
    }
    gl.bindVertexArray(null);
    return { drawn, missing, lod: level.lod };
  }

  _bind(first) {
    const gl = this.gl, b = this.r.buffers;
    gl.bindBuffer(gl.ARRAY_BUFFER, b.x);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 1, gl.UNSIGNED_SHORT, true, 0, first * 2);
    gl.vertexAttribDivisor(0, 1);
    gl.bindBuffer(gl.ARRAY_BUFFER, b.y);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribPointer(1, 1, gl.UNSIGNED_SHORT, true, 0, first * 2);
    gl.vertexAttribDivisor(1, 1);
    gl.bindBuffer(gl.ARRAY_BUFFER, b.color);
    gl.enableVertexAttribArray(2);
    gl.vertexAttribPointer(2, 4, gl.UNSIGNED_BYTE, true, 0, first * 4);
    gl.vertexAttribDivisor(2, 1);
  }

  dispose() {
    for (const v of this.cache.values()) this.gl.deleteTexture(v.tex);
    this.cache.clear();
  }
}
