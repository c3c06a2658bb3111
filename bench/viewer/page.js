// The benchmark's baseline: the same map (the same bytes from the same server) drawn by
// regl-scatterplot with its defaults, colour by cluster. Exposes window.__bench for bench/viewer.py.
import createScatterplot from 'regl-scatterplot';

const params = new URLSearchParams(location.search);
const W = Number(params.get('w') || 1280), H = Number(params.get('h') || 800);
const ZOOM = Number(params.get('zoom') || 1); // the viewer's margin, applied to the positions
const bench = { ready: false, timings: {}, lasso: null };
window.__bench = bench;

function parse(buffer) {
  const n = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const T = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array };
  const cols = {};
  for (const c of header.columns) cols[c.name] = new T[c.dtype](buffer, 8 + n + c.offset, c.length);
  return { header, cols };
}

function palette(k) {
  const out = [];
  for (let i = 0; i < k; i++) out.push(`hsl(${Math.round((i * 0.618033988749895 % 1) * 360)}, 70%, 55%)`);
  return out;
}

async function main() {
  const canvas = document.getElementById('c');
  canvas.style.width = `${W}px`; canvas.style.height = `${H}px`;
  canvas.width = W * devicePixelRatio; canvas.height = H * devicePixelRatio;
  const t = performance.now();
  const { header, cols } = parse(await (await fetch(params.get('data') || 'map.bin')).arrayBuffer());
  bench.timings.fetchMs = performance.now() - t;
  const n = header.n;
  const x = new Float32Array(n), y = new Float32Array(n), z = new Float32Array(n);
  let maxC = 0;
  for (let i = 0; i < n; i++) {
    x[i] = ((cols.x[i] / 65535) * 2 - 1) * ZOOM;
    y[i] = ((cols.y[i] / 65535) * 2 - 1) * ZOOM;
    z[i] = cols.cluster[i];
    if (cols.cluster[i] > maxC) maxC = cols.cluster[i];
  }
  // Defaults, except: synchronous events (to time them) and a lasso that records every pointer
  // move 2 px apart like ours (its default 15 ms minimum delay drops a fast programmatic stroke).
  const sp = createScatterplot({
    canvas, width: W, height: H, syncEvents: true, lassoMinDelay: 0, lassoMinDist: 2,
    pointColor: palette(Math.min(maxC + 1, 1000)), colorBy: 'valueA', backgroundColor: '#111318',
  });
  bench.sp = sp;
  const ctx2d = canvas.getContext('2d');
  const sync = () => ctx2d.getImageData(0, 0, 1, 1);
  bench.sync = sync;
  let lastDraw = 0;
  sp.subscribe('draw', () => { lastDraw = performance.now(); });
  // time from the mouse-up that ends a lasso to the select event
  let up = 0;
  window.addEventListener('mouseup', (e) => { up = performance.now(); bench.upStamp = e.timeStamp; }, true);
  // the first select after the mouse-up is the lasso's (a click handler may select again later)
  bench.selects = [];
  sp.subscribe('select', ({ points }) => {
    bench.selects.push({ selected: points.length, ms: performance.now() - up });
    if (!bench.lasso) bench.lasso = bench.selects[0];
    document.getElementById('count').textContent = String(points.length);
  });
  sp.subscribe('lassoEnd', ({ coordinates }) => { bench.lassoPolygon = coordinates; });
  await sp.draw({ x, y, valueA: z }, { zDataType: 'categorical' });
  sync();
  bench.timings.firstFrameAt = performance.now();
  bench.n = n;
  // one frame after a camera change: set target/distance, wait for regl-scatterplot's draw, sync
  bench.step = (dx, dy, f) => new Promise((resolve) => {
    const t0 = performance.now();
    const cam = sp.get('camera');
    const d = cam.distance[0];
    const half = Math.min(W, H) / 2;
    const target = [cam.target[0] + (-dx / half) * d, cam.target[1] + (dy / half) * d];
    const before = lastDraw;
    const done = () => { if (lastDraw === before) { requestAnimationFrame(done); return; } sync(); resolve(performance.now() - t0); };
    sp.set({ cameraTarget: target, cameraDistance: d / f });
    requestAnimationFrame(done);
  });
  bench.ready = true;
}

main().catch((e) => { bench.error = String(e && e.stack || e); });
