"""The viewer's pure logic (selection algebra, lasso, grid, camera), run in real Chromium."""

from __future__ import annotations

import pytest

from tests.api.conftest import browser_context

pytestmark = pytest.mark.browser


@pytest.fixture
def js(browser, live_server):
    """A page on the server's origin where the viewer's modules can be imported."""
    with browser_context(browser) as ctx:
        page = ctx.new_page()
        page.goto(f"{live_server.url}/api/health")
        yield page


def test_lasso_fast_path_equals_brute_force(js):
    res = js.evaluate(
        """async () => {
        const { pointsInPolygon, pointsInPolygonBrute } = await import('/src/lasso.js');
        let s = 7; const rnd = () => (s = (s * 16807) % 2147483647) / 2147483647;
        const n = 60000, x = new Uint16Array(n), y = new Uint16Array(n);
        for (let i = 0; i < n; i++) { x[i] = rnd() * 65535; y[i] = rnd() * 65535; }
        const out = [];
        for (let t = 0; t < 12; t++) {
          // free-hand like polygons: a wobbly loop, some self-intersecting, some tiny, some thin
          const k = 3 + Math.floor(rnd() * 300), cx = rnd() * 65535, cy = rnd() * 65535;
          const r = t % 4 === 0 ? 300 : 5000 + rnd() * 20000;
          const poly = new Float64Array(2 * k);
          for (let j = 0; j < k; j++) {
            const a = (j / k) * Math.PI * 2 * (t % 3 === 0 ? 3 : 1);
            const rr = r * (0.4 + rnd() * (t % 5 === 0 ? 0.05 : 0.8));
            poly[2 * j] = cx + Math.cos(a) * rr * (t % 2 ? 4 : 1); poly[2 * j + 1] = cy + Math.sin(a) * rr;
          }
          const fast = pointsInPolygon(poly, x, y, [[0, n]]);
          const brute = pointsInPolygonBrute(poly, x, y, n);
          out.push([fast.length, brute.length, fast.every((v, i) => v === brute[i])]);
        }
        return out;
      }"""
    )
    assert any(b > 100 for _, b, _ in res)
    for fast, brute, same in res:
        assert fast == brute and same


def test_selection_algebra(js):
    res = js.evaluate(
        """async () => {
        const { Selection, REPLACE, ADD, SUBTRACT, leastSureFirst } = await import('/src/selection.js');
        const s = new Selection(10);
        s.apply([1, 2, 3], REPLACE);
        s.apply([3, 4], ADD);
        s.apply([1, 9], SUBTRACT);
        const a = Array.from(s.list());
        s.exclude([2, 7]);
        const named = s.toName();
        s.apply([2], SUBTRACT);
        const after = [Array.from(s.list()), [...s.excluded]];
        s.apply([2, 5, 6], ADD);
        s.skip([2, 5, 7]);  // the tile cut: left out, no verdict (7 is not selected)
        s.exclude([5]);      // marked after all: an exclusion, no longer only left out
        const cut = { named: s.toName(), skipped: [...s.skipped], excluded: [...s.excluded].sort(), out: [2, 5, 6].map((i) => s.isOut(i)) };
        s.include([2]);
        cut.back = s.toName();
        s.apply([5], REPLACE);
        cut.cleared = s.skipped.size + s.excluded.size;
        const order = Array.from(leastSureFirst([0, 1, 2, 3], new Uint8Array([10, 200, 200, 0]), new Uint8Array([255, 10, 200, 9])));
        return { a, count: a.length, named, after, cut, replaced: Array.from(s.list()), excluded: s.excluded.size, order };
      }"""
    )
    assert res["a"] == [2, 3, 4] and res["count"] == 3
    assert res["named"] == [3, 4]  # 2 excluded; 7 was never selected
    assert res["after"] == [[3, 4], []]
    assert res["cut"] == {"named": [3, 4, 6], "skipped": [2], "excluded": [5], "out": [True, True, False], "back": [2, 3, 4, 6], "cleared": 0}
    assert res["replaced"] == [5] and res["excluded"] == 0
    assert res["order"] == [1, 2, 0, 3]  # highest outlier first, then lowest membership


def test_grid_ranges_and_camera(js):
    res = js.evaluate(
        """async () => {
        const { Grid } = await import('/src/spatial.js');
        const { Camera } = await import('/src/camera.js');
        // points sorted by 4x4 cells row by row, as the server sends them
        const g = 4, pts = [];
        let s = 3; const rnd = () => (s = (s * 16807) % 2147483647) / 2147483647;
        for (let i = 0; i < 2000; i++) pts.push([Math.floor(rnd() * 65536), Math.floor(rnd() * 65536)]);
        const cell = ([x, y]) => Math.floor(y * g / 65536) * g + Math.floor(x * g / 65536);
        pts.sort((a, b) => cell(a) - cell(b));
        const x = Uint16Array.from(pts.map((p) => p[0])), y = Uint16Array.from(pts.map((p) => p[1]));
        const start = new Uint32Array(g * g + 1);
        for (const p of pts) start[cell(p) + 1]++;
        for (let k = 1; k < start.length; k++) start[k] += start[k - 1];
        const grid = new Grid(x, y, start, g);
        const [u0, v0, u1, v1] = [0.3, 0.2, 0.6, 0.45];
        const covered = new Set();
        for (const [f, c] of grid.ranges(u0, v0, u1, v1)) for (let i = f; i < f + c; i++) covered.add(i);
        let missing = 0;
        for (let i = 0; i < x.length; i++) {
          const u = x[i] / 65535, v = y[i] / 65535;
          if (u >= u0 && u <= u1 && v >= v0 && v <= v1 && !covered.has(i)) missing++;
        }
        const cam = new Camera(); cam.resize(800, 600); cam.zoomAt(100, 100, 3); cam.panBy(40, -25);
        const [sx, sy] = cam.toScreen(...cam.toWorld(321, 123));
        const near = grid.nearest(x[5] / 65535, y[5] / 65535, 0.001);
        return { missing, covered: covered.size, total: x.length, sx, sy, near, x5: x[5], y5: y[5], xn: x[near], yn: y[near] };
      }"""
    )
    assert res["missing"] == 0 and res["covered"] < res["total"]
    assert abs(res["sx"] - 321) < 1e-6 and abs(res["sy"] - 123) < 1e-6
    assert (res["xn"], res["yn"]) == (res["x5"], res["y5"])


def test_a_large_selection_is_packed_as_the_server_unpacks_it(js):
    """The viewer sends a selection as a list while that is shorter, else as one bit per point;
    the server's unpacking gives back exactly the selected points."""
    import numpy as np

    from corral.api.inputs import unpack_bitmap

    rng = np.random.default_rng(3)
    for n, k in ((1_000_003, 900_000), (3048, 3000), (3048, 7), (9, 9)):
        chosen = np.sort(rng.choice(n, k, replace=False))
        sent = js.evaluate("async ([idx, n]) => (await import('/src/wire.js')).packPoints(idx, n)", [chosen.tolist(), n])
        if isinstance(sent, list):
            assert k * 7 < n and sent == chosen.tolist()
        else:
            assert k * 7 > n and len(sent) < n / 5 + 20
            assert np.array_equal(unpack_bitmap(sent), chosen)
