// Draws the points: with WebGL2 point sprites on a GPU, or with the CPU rasteriser (splat.js)
// when WebGL itself is software; either way the frame is composed in WebGL2, under the
// thumbnails. Only the grid cells on screen are drawn; selected points go on top.

import { program, rendererName, isSoftware } from './gl.js';
import { Splatter } from './splat.js';
import { BACKGROUND, MARK_RGB, MARK_EXCLUDED, MARK_NEW, MARK_SELECTED, MARK_OUT } from './colors.js';

const POINT_VS = `#version 300 es
precision highp float;
layout(location=0) in float ax;
layout(location=1) in float ay;
layout(location=2) in vec4 acolor;
uniform vec4 uT;
uniform float uSize;
flat out vec4 vColor;
flat out int vMark;
void main() {
  int mark = int(acolor.a * 255.0 + 0.5);
  if (mark == 0) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); gl_PointSize = 0.0; vMark = 0; vColor = vec4(0.0); return; }
  gl_Position = vec4(vec2(ax, ay) * uT.xy + uT.zw, 0.0, 1.0);
  gl_PointSize = uSize;
  vColor = vec4(acolor.rgb, 1.0);
  vMark = mark;
}`;

const ring = (k) => `vec3(${MARK_RGB[k].map((v) => (v / 255).toFixed(3)).join(',')})`;
const POINT_FS = `#version 300 es
precision mediump float;
flat in vec4 vColor;
flat in int vMark;
uniform highp float uSize;
out vec4 outColor;
bool ringed(int m) { return m == ${MARK_EXCLUDED} || m == ${MARK_NEW} || m == ${MARK_OUT}; }
bool hasRing(int m) { return ringed(m) || m == ${MARK_SELECTED}; }
vec3 markColor(int m) {
  if (m == ${MARK_EXCLUDED} || m == ${MARK_OUT}) return ${ring(MARK_EXCLUDED)};
  if (m == ${MARK_NEW}) return ${ring(MARK_NEW)};
  return ${ring(MARK_SELECTED)};
}
void main() {
  vec3 c = vColor.rgb;
  if (uSize >= 3.0) {
    vec2 d = gl_PointCoord * 2.0 - 1.0;
    float r2 = dot(d, d);
    if (r2 > 1.0) discard;
    if ((ringed(vMark) && uSize < 4.0) || (hasRing(vMark) && uSize >= 4.0 && r2 > 0.45)) c = markColor(vMark);
  } else if (ringed(vMark)) {
    c = markColor(vMark);
  }
  outColor = vec4(c, 1.0);
}`;

const QUAD_VS = `#version 300 es
out vec2 vUv;
void main() {
  vec2 p = vec2(float((gl_VertexID & 1) * 2 - 1), float((gl_VertexID >> 1) * 2 - 1));
  vUv = vec2(p.x * 0.5 + 0.5, 0.5 - p.y * 0.5);
  gl_Position = vec4(p, 0.0, 1.0);
}`;
const QUAD_FS = `#version 300 es
precision mediump float;
in vec2 vUv;
uniform sampler2D uTex;
out vec4 outColor;
void main() { outColor = texture(uTex, vUv); }`;

export class Renderer {
  constructor(canvas, { mode = 'auto' } = {}) {
    this.canvas = canvas;
    const gl = canvas.getContext('webgl2', {
      antialias: false, alpha: false, depth: false, stencil: false,
      premultipliedAlpha: false, preserveDrawingBuffer: false, powerPreference: 'high-performance',
    });
    if (!gl) throw new Error('This browser has no WebGL2; Corral needs WebGL2 (software WebGL works).');
    this.gl = gl;
    this.gpuName = rendererName(gl);
    this.software = isSoftware(this.gpuName);
    this.mode = mode === 'auto' ? (this.software ? 'cpu' : 'gpu') : mode;
    this.points = program(gl, POINT_VS, POINT_FS, { ax: 0, ay: 1, acolor: 2 });
    this.quad = program(gl, QUAD_VS, QUAD_FS);
    this.vao = gl.createVertexArray();
    this.buffers = { x: gl.createBuffer(), y: gl.createBuffer(), color: gl.createBuffer(), top: gl.createBuffer() };
    this.quadVao = gl.createVertexArray();
    this.tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.tex);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.texSize = [0, 0];
    this.splat = new Splatter();
    this.n = 0;
    this.topCount = 0;
    this.onTop = null;
    this.dpr = 1;
  }

  /** Point positions (Uint16Array each, 0..65535). */
  setPoints(x, y) {
    const gl = this.gl;
    this.x = x; this.y = y; this.n = x.length;
    // Buffers are uploaded in both modes: the thumbnail layer draws from them.
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.x);
    gl.bufferData(gl.ARRAY_BUFFER, x, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 1, gl.UNSIGNED_SHORT, true, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.y);
    gl.bufferData(gl.ARRAY_BUFFER, y, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribPointer(1, 1, gl.UNSIGNED_SHORT, true, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.color);
    gl.bufferData(gl.ARRAY_BUFFER, this.n * 4, gl.DYNAMIC_DRAW);
    gl.enableVertexAttribArray(2);
    gl.vertexAttribPointer(2, 4, gl.UNSIGNED_BYTE, true, 0, 0);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers.top);
    gl.bindVertexArray(null);
  }

  /** Packed RGBA per point (see colors.js). */
  setColors(colors) {
    this.colors = colors;
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.color);
    gl.bufferSubData(gl.ARRAY_BUFFER, 0, new Uint8Array(colors.buffer, colors.byteOffset, colors.byteLength));
  }

  /** Indices drawn after everything else (the selection). */
  setOnTop(indices) {
    this.onTop = indices;
    this.topCount = indices ? indices.length : 0;
    if (this.mode !== 'gpu' || !this.topCount) return;
    const gl = this.gl;
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers.top);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.DYNAMIC_DRAW);
    gl.bindVertexArray(null);
  }

  /** Match the drawing buffer to the canvas's CSS size. */
  resize(cssW, cssH, dpr) {
    this.dpr = dpr;
    const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    return [w, h];
  }

  clear() {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(BACKGROUND[0] / 255, BACKGROUND[1] / 255, BACKGROUND[2] / 255, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
  }

  /** Draw the points of ``ranges`` at ``size`` CSS pixels for ``camera``. */
  drawPoints(camera, ranges, size) {
    const gl = this.gl;
    const w = this.canvas.width, h = this.canvas.height;
    const px = Math.max(1, size * this.dpr);
    if (this.mode === 'gpu') {
      this.clear();
      gl.useProgram(this.points.program);
      gl.uniform4fv(this.points.uniforms.uT, camera.clipTransform());
      gl.uniform1f(this.points.uniforms.uSize, Math.round(px));
      gl.bindVertexArray(this.vao);
      for (const [first, count] of ranges) gl.drawArrays(gl.POINTS, first, count);
      if (this.topCount) gl.drawElements(gl.POINTS, this.topCount, gl.UNSIGNED_INT, 0);
      gl.bindVertexArray(null);
      return;
    }
    this.splat.resize(w, h);
    const s = camera.scale * this.dpr;
    const t = [s / 65535, (camera.width / 2 - camera.cx * s / this.dpr) * this.dpr, -s / 65535, (camera.height / 2 + camera.cy * s / this.dpr) * this.dpr];
    this.splat.draw(this.x, this.y, this.colors, ranges, this.onTop, t, px);
    gl.viewport(0, 0, w, h);
    gl.bindTexture(gl.TEXTURE_2D, this.tex);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 4);
    if (this.texSize[0] !== w || this.texSize[1] !== h) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, w, h, 0, gl.RGBA, gl.UNSIGNED_BYTE, this.splat.bytes);
      this.texSize = [w, h];
    } else {
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, this.splat.bytes);
    }
    gl.useProgram(this.quad.program);
    gl.uniform1i(this.quad.uniforms.uTex, 0);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindVertexArray(this.quadVao);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    gl.bindVertexArray(null);
  }

  /** Wait until the GPU has finished the frame (for measurements). */
  sync() {
    const px = new Uint8Array(4);
    this.gl.readPixels(0, 0, 1, 1, this.gl.RGBA, this.gl.UNSIGNED_BYTE, px);
    return px;
  }
}
