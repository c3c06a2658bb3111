"""Driving the viewer in Playwright: open it as a user, lasso, click a cluster, read its state."""

from __future__ import annotations

import os
from pathlib import Path

from tests.api.conftest import page_for, wait_ready

#: where the browser tests save their screenshots (the docs' pictures); unset: none are taken
SHOTS = os.environ.get("CORRAL_SCREENSHOTS")


def shot(page, name: str) -> None:
    """A screenshot of the page to ``$CORRAL_SCREENSHOTS`` when that is set."""
    if SHOTS:
        page.wait_for_timeout(300)
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def open_viewer(browser, server_url: str, token: str):
    """A context manager: a page of the viewer signed in with ``token`` (its own cookie jar)."""
    return page_for(browser, f"{server_url}/?token={token}")


HULL_JS = """(cluster) => {
  // screen positions of the cluster's points, their convex hull, pushed out by 12 px
  const h = window.__corral, m = h.store.map, cam = h.view.camera;
  const pts = [];
  for (let i = 0; i < m.n; i++) if (m.cluster[i] === cluster + 1) pts.push(cam.toScreen(m.x[i] / 65535, m.y[i] / 65535));
  pts.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lower = [], upper = [];
  for (const p of pts) { while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], p) <= 0) lower.pop(); lower.push(p); }
  for (const p of pts.slice().reverse()) { while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], p) <= 0) upper.pop(); upper.push(p); }
  const hull = lower.slice(0, -1).concat(upper.slice(0, -1));
  const cx = hull.reduce((s, p) => s + p[0], 0) / hull.length, cy = hull.reduce((s, p) => s + p[1], 0) / hull.length;
  return { size: pts.length, hull: hull.map(([x, y]) => { const d = Math.hypot(x - cx, y - cy) || 1; return [x + (x - cx) / d * 12, y + (y - cy) / d * 12]; }) };
}"""


def cluster_hull(page, cluster: int) -> tuple[int, list[list[float]]]:
    res = page.evaluate(HULL_JS, cluster)
    return res["size"], res["hull"]


def lasso(page, polygon: list[list[float]], *, modifier: str | None = None) -> None:
    """Draw ``polygon`` (screen px relative to the map) with the real mouse in lasso mode."""
    box = page.locator("#stage").bounding_box()
    page.locator("#tool-lasso").click()
    pts = [(box["x"] + x, box["y"] + y) for x, y in polygon]
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.move(*pts[0])
    page.mouse.down()
    for p in pts[1:] + pts[:1]:
        page.mouse.move(*p, steps=4)
    page.mouse.up()
    if modifier:
        page.keyboard.up(modifier)
    page.wait_for_function("() => window.__corral.view.lastLasso && window.__corral.view.lastLasso.frameMs !== null")


def click_point(page, index: int, *, modifier: str | None = None) -> None:
    """Click on the screen position of point ``index`` with the pan tool (selects its cluster)."""
    page.locator("#tool-pan").click()
    x, y = page.evaluate("(i) => { const h = window.__corral, m = h.store.map; return h.view.camera.toScreen(m.x[i] / 65535, m.y[i] / 65535); }", index)
    box = page.locator("#stage").bounding_box()
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.click(box["x"] + x, box["y"] + y)
    if modifier:
        page.keyboard.up(modifier)


def label_counts(page) -> dict[str, int]:
    """What the labels list shows: name -> count on this map."""
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.label-row')].map((r) => [r.dataset.label, Number(r.querySelector('.count').textContent.replace(/,/g, ''))]))"
    )


def selected(page) -> int:
    return page.evaluate("() => window.__corral.selectedCount()")


__all__ = ["open_viewer", "cluster_hull", "lasso", "click_point", "label_counts", "selected", "wait_ready"]
