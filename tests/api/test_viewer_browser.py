"""The viewer in headless Chromium against the real server: what a curator does all day.

Lasso a cluster, exclude two items in the grid, name the rest, reload and find the label kept,
undo it, merge two labels, split a cluster, watch another curator's change arrive, and check
that a viewer-role user cannot write. The map is a real one of the generated object set
(tests/generated.py). Screenshots of the main screens go to ``$CORRAL_SCREENSHOTS`` when that is
set (``docs/`` for the README); they are taken of the COIL-20 map from the shared data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.api.conftest import LiveServer
from tests.api.viewer_helpers import click_point, cluster_hull, label_counts, lasso, open_viewer, selected, wait_ready

pytestmark = pytest.mark.browser

SHOTS = os.environ.get("CORRAL_SCREENSHOTS")


def shot(page, name: str) -> None:
    """Save a screenshot once the visible grid thumbnails have loaded."""
    if SHOTS:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_function(
                "() => [...document.querySelectorAll('#grid .tile img')].slice(0, 25).every((i) => i.getAttribute('src') && i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
        except PlaywrightTimeout:
            pass  # a screenshot with a few thumbnails still loading is still a screenshot
        page.mouse.move(0, 0)
        page.wait_for_timeout(200)
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


@pytest.fixture(scope="module")
def mapped_viewer(request, tmp_path_factory):
    """A private copy of an embedded and mapped workspace (our labels stay ours), served by the
    real app under uvicorn, with a user per role."""
    from corral.api.auth import UserStore

    mapped = request.getfixturevalue("coil20_map" if SHOTS else "generated_map")
    root = tmp_path_factory.mktemp("viewer") / "ws"
    shutil.copytree(mapped, root, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json", "cache"))
    users = UserStore(root)
    tokens = {name: users.add(name, role=role) for name, role in (("ana", "curator"), ("ben", "curator"), ("vic", "viewer"))}
    with LiveServer(root) as srv:
        yield srv, tokens, root


def _biggest_clusters(page, k: int) -> list[int]:
    return page.evaluate(
        """(k) => { const c = window.__corral.store.map.cluster, n = new Map();
        for (const v of c) if (v) n.set(v - 1, (n.get(v - 1) || 0) + 1);
        return [...n.entries()].sort((a, b) => b[1] - a[1]).slice(0, k).map((e) => e[0]); }""",
        k,
    )


def _first_of_cluster(page, cluster: int) -> int:
    return page.evaluate("(c) => window.__corral.store.map.cluster.indexOf(c + 1)", cluster)


def test_curate_a_cluster_end_to_end(browser, mapped_viewer):
    srv, tokens, root = mapped_viewer
    with open_viewer(browser, srv.url, tokens["ana"]) as page, open_viewer(browser, srv.url, tokens["ben"]) as other:
        wait_ready(page)
        wait_ready(other)
        assert page.url.endswith("/")  # the token left the address bar
        shot(page, "viewer-map.png")
        c0 = _biggest_clusters(page, 1)[0]
        size, hull = cluster_hull(page, c0)

        # lasso the cluster: every point of it is selected, and the count is exact
        lasso(page, hull)
        got = page.evaluate(
            """async () => { const { pointsInPolygonBrute } = await import('/src/lasso.js');
            const h = window.__corral, m = h.store.map, L = h.view.lastLasso;
            const brute = pointsInPolygonBrute(Float64Array.from(L.polygon), m.x, m.y, m.n).length;
            const sel = h.store.selection; let inCluster = 0;
            for (const i of sel.list()) if (m.cluster[i] === %d) inCluster++;
            return { selected: sel.count, brute, inCluster, shown: document.querySelector('#sel-count').textContent }; }"""
            % (c0 + 1)
        )
        assert got["selected"] == got["brute"] and got["inCluster"] == size
        assert got["shown"].startswith(f"{got['selected']:,} selected")
        n_sel = got["selected"]

        # the grid: least sure first, with real thumbnails; mark two and exclude them
        page.wait_for_function("() => document.querySelectorAll('#grid .tile img[src]').length >= 2")
        page.wait_for_function("() => [...document.querySelectorAll('#grid .tile img')].slice(0, 2).every((i) => i.complete && i.naturalWidth > 0)")
        tiles = page.locator("#grid .tile")
        tiles.nth(0).click()
        tiles.nth(1).click()
        page.keyboard.press("e")
        assert "2 excluded" in page.locator("#sel-detail").text_content()
        excluded_idx = page.evaluate("() => [...window.__corral.store.selection.excluded]")
        # the 4th tile's cut leaves it and the tiles before it out of the naming: the two marked
        # stay "not this", the other two are only left out (no verdict on them)
        tiles.nth(3).hover()
        tiles.nth(3).locator(".t-below").click()
        assert "2 excluded · 2 left out" in page.locator("#sel-detail").text_content()
        skipped_idx = page.evaluate("() => [...window.__corral.store.selection.skipped]")
        assert len(skipped_idx) == 2 and not set(skipped_idx) & set(excluded_idx)
        shot(page, "viewer-selection.png")

        # name it: one action for the whole selection minus the four
        page.locator("#name-input").fill("duck")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('.label-row[data-label=\"duck\"]')")
        assert label_counts(page)["duck"] == n_sel - 4

        # the other curator sees it arrive without reloading
        other.wait_for_function("() => document.querySelector('.label-row[data-label=\"duck\"]')", timeout=20_000)
        assert label_counts(other)["duck"] == n_sel - 4

        # reload: the label is stored, the two marked are "not duck", the two cut off are plain unlabelled
        page.reload()
        wait_ready(page)
        assert label_counts(page)["duck"] == n_sel - 4
        states = page.evaluate("(ex) => ex.map((i) => [window.__corral.store.labels.label[i], window.__corral.store.labels.state[i]])", excluded_idx + skipped_idx)
        assert states == [[0, 1], [0, 1], [0, 0], [0, 0]]
        page.locator("#color-mode").click()
        shot(page, "viewer-labels.png")
        page.locator("#color-mode").click()

        # undo (Ctrl+Z) removes it, here and for the other curator; redo brings it back
        page.locator("#stage").click(position={"x": 5, "y": 5})
        page.keyboard.press("Escape")
        page.keyboard.press("Control+z")
        page.wait_for_function("() => !document.querySelector('.label-row[data-label=\"duck\"]')")
        other.wait_for_function("() => !document.querySelector('.label-row[data-label=\"duck\"]')", timeout=20_000)
        page.keyboard.press("Control+Shift+z")
        page.wait_for_function("() => document.querySelector('.label-row[data-label=\"duck\"]')")
        assert label_counts(page)["duck"] == n_sel - 4


def test_merge_two_labels(browser, mapped_viewer):
    srv, tokens, _ = mapped_viewer
    with open_viewer(browser, srv.url, tokens["ana"]) as page:
        wait_ready(page)
        a, b = _biggest_clusters(page, 3)[1:3]
        for cluster, name in ((a, "alpha"), (b, "beta")):
            click_point(page, _first_of_cluster(page, cluster))
            page.wait_for_function("() => window.__corral.selectedCount() > 0")
            page.locator("#name-input").fill(name)
            page.keyboard.press("Enter")
            page.wait_for_function(f"() => document.querySelector('.label-row[data-label=\"{name}\"]')")
        counts = label_counts(page)
        page.locator('.label-row[data-label="alpha"] [data-act="merge"]').click()
        page.locator("#prompt-input").fill("beta")
        page.locator("#prompt-ok").click()
        page.wait_for_function("() => !document.querySelector('.label-row[data-label=\"alpha\"]')")
        assert label_counts(page)["beta"] == counts["alpha"] + counts["beta"]


def test_split_a_cluster(browser, mapped_viewer):
    srv, tokens, _ = mapped_viewer
    with open_viewer(browser, srv.url, tokens["ana"]) as page:
        wait_ready(page)
        c0 = _biggest_clusters(page, 1)[0]
        click_point(page, _first_of_cluster(page, c0))
        page.wait_for_function("() => window.__corral.selectedCount() > 0")
        n = selected(page)
        page.keyboard.press("s")
        page.wait_for_function("() => document.querySelectorAll('#subclusters .chip').length >= 1 || document.querySelector('#toast.error.show')", timeout=180_000)
        assert not page.locator("#toast.error.show").count(), page.locator("#toast").text_content()
        sizes = page.evaluate("() => window.__corral.store.subclusters.map((c) => c.size)")
        assert sum(sizes) == n
        page.locator("#subclusters .chip").first.click()
        assert selected(page) == sizes[0]
        shot(page, "viewer-split.png")


def test_thumbnails_when_zoomed_in(browser, mapped_viewer):
    srv, tokens, _ = mapped_viewer
    with open_viewer(browser, srv.url, tokens["vic"]) as page:
        wait_ready(page)
        c0 = _biggest_clusters(page, 1)[0]
        click_point(page, _first_of_cluster(page, c0))
        page.keyboard.press("z")
        # closer still, around one of its points, until the points spread out into thumbnails
        zoomed = page.evaluate(
            """async (i) => { const h = window.__corral, c = h.view.camera, m = h.store.map;
            for (let k = 0; k < 8; k++) {
              h.frame(); if (h.view.stats.thumbs) return k;
              const [x, y] = c.toScreen(m.x[i] / 65535, m.y[i] / 65535); h.zoomAt(x, y, 1.5);
            }
            return -1; }""",
            _first_of_cluster(page, c0),
        )
        assert zoomed >= 0, "no zoom level showed thumbnails"
        page.wait_for_function("() => { window.__corral.frame(); const t = window.__corral.view.stats.thumbs; return t && t.drawn > 0 && t.missing === 0; }", timeout=90_000)
        # closer again: bigger thumbnails, from the high-detail atlases
        page.evaluate("(i) => { const h = window.__corral, m = h.store.map; const [x, y] = h.view.camera.toScreen(m.x[i] / 65535, m.y[i] / 65535); h.zoomAt(x, y, 3); }", _first_of_cluster(page, c0))
        page.wait_for_function("() => { window.__corral.frame(); const t = window.__corral.view.stats.thumbs; return t && t.drawn > 0 && t.missing === 0; }", timeout=90_000)
        assert page.evaluate("() => window.__corral.view.stats.thumbs.lod") == 1
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        shot(page, "viewer-thumbnails.png")
        assert page.evaluate("() => window.__corral.view.thumbs.gpuBytes") <= 192 * 1024 * 1024


def test_a_viewer_cannot_write(browser, mapped_viewer):
    srv, tokens, _ = mapped_viewer
    with open_viewer(browser, srv.url, tokens["vic"]) as page:
        wait_ready(page)
        assert page.evaluate("() => document.body.classList.contains('read-only')")
        assert not page.locator("#name-input").is_visible()
        status = page.evaluate(
            """async () => (await fetch('/api/maps/' + window.__corral.store.map.name + '/actions/assign', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-Corral-Request': '1'}, body: JSON.stringify({indices: [0], label: 'x'})})).status"""
        )
        assert status == 403
        page.keyboard.press("Control+z")
        page.wait_for_function("() => document.querySelector('#toast').textContent.includes('may not')")
