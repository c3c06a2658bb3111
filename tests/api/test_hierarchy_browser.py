"""Up and down the cluster tree in headless Chromium against the real server.

The map is four blobs in two pairs (tests/api/hierarchy_ws.py), HDBSCAN's leaf cut gives the
four blobs and the map keeps its condensed tree. A curator clicks one blob, ↑ selects the pair
(its parent node), ↓ returns to the blob, B selects the blob with its sibling as two groups, and
a blob with no finer split says so. On a map made before the tree was kept, the keys say how to
get one."""

from __future__ import annotations

import numpy as np
import pytest

from corral.api.binpack import unpack
from corral.pipeline.hierarchy import node_members
from tests.api.conftest import LiveServer, browser_context
from tests.api.hierarchy_ws import nested_curation_ws
from tests.api.viewer_helpers import click_point, open_viewer, selected, shot, wait_ready

pytestmark = pytest.mark.browser

SELECTION = "() => Array.from(window.__corral.store.selection.list())"


def press(page, key: str) -> None:
    serial = page.evaluate("() => window.__corral.store.selection.serial")
    page.keyboard.press(key)
    page.wait_for_function("(s) => window.__corral.store.selection.serial !== s", arg=serial)


def level(page) -> str:
    return page.locator("#sel-level").inner_text()


def test_step_up_down_and_siblings(browser, tmp_path):
    cur, _ = nested_curation_ws(tmp_path / "ws")
    with LiveServer(cur.root) as srv:
        import httpx

        auth = cur.auth("viewer")
        meta = httpx.get(f"{srv.url}/api/maps/main", headers=auth).json()
        _, cols = unpack(httpx.get(f"{srv.url}{meta['hierarchy_url']}", headers=auth).content)
        _, pts = unpack(httpx.get(f"{srv.url}{meta['points_url']}", headers=auth).content)
        cluster = pts["cluster"].astype(np.int64) - 1
        h = dict(cols)
        c = 0
        node = int(h["cluster_node"][c])
        parent = int(h["node_parent"][node])
        sibling = int(next(k for k in np.flatnonzero(h["node_parent"] == parent) if k != node))
        own = np.flatnonzero(cluster == c).tolist()
        pair = node_members(h, parent, cluster).tolist()
        both = sorted(own + node_members(h, sibling, cluster).tolist())
        assert len(pair) > len(own) + 40

        with open_viewer(browser, srv.url, cur.tokens["curator"]) as page:
            wait_ready(page)
            page.wait_for_function("() => window.__corral.climb && window.__corral.climb.tree")
            click_point(page, own[len(own) // 2])
            page.wait_for_function("(n) => window.__corral.selectedCount() === n", arg=len(own))
            assert level(page).startswith(f"cluster {c} · {len(own)} items") and "↑ parent" in level(page)

            press(page, "ArrowUp")  # the parent: this blob and the other of its pair
            assert page.evaluate(SELECTION) == pair
            assert f"cluster {c} ↑ parent of 2 clusters · {len(pair)} items" in level(page)

            press(page, "ArrowDown")  # back the way it came
            assert page.evaluate(SELECTION) == own
            assert level(page).startswith(f"cluster {c} ·")

            press(page, "b")  # the blob and its sibling, as two groups
            assert page.evaluate(SELECTION) == both
            chips = page.locator("#subclusters .chip")
            # the panel draws the chips on its next frame, after the selection has changed
            page.wait_for_function("() => document.querySelectorAll('#subclusters .chip').length === 2", timeout=30_000)
            assert chips.count() == 2 and "siblings" in page.locator("#subclusters").inner_text()
            assert "and its sibling" in level(page)
            shot(page, "viewer-hierarchy.png")

            chips.nth(1).click()  # the sibling's chip: that group on its own
            page.wait_for_function("(n) => window.__corral.selectedCount() === n", arg=len(both) - len(own))
            assert not set(page.evaluate(SELECTION)) & set(own)

            # the pair picked by hand (click, shift-click): ↓ shows its two blobs as groups, the largest selected
            sib_rows = node_members(h, sibling, cluster).tolist()
            click_point(page, own[0])
            click_point(page, sib_rows[len(sib_rows) // 2], modifier="Shift")
            page.wait_for_function("(n) => window.__corral.selectedCount() === n", arg=len(own) + len(sib_rows))
            assert level(page).startswith("2 clusters (in: parent of 2 clusters)") and "↓ 2 children" in level(page)
            press(page, "ArrowDown")
            assert page.evaluate(SELECTION) in (own, sib_rows) and len(page.evaluate(SELECTION)) == max(len(own), len(sib_rows))
            assert "children" in page.locator("#subclusters").inner_text() and chips.count() == 2

            click_point(page, own[0])
            page.wait_for_function("(n) => window.__corral.selectedCount() === n", arg=len(own))
            page.keyboard.press("ArrowDown")  # a leaf blob: nothing finer
            page.wait_for_function("() => document.querySelector('#toast').textContent.includes('no finer split')")
            assert selected(page) == len(own)

            page.keyboard.press("?")
            help_text = page.locator("#help-list").inner_text()
            assert "cluster tree" in help_text and "sibling" in help_text
            page.keyboard.press("Escape")
            assert page.errors == []


def test_a_map_without_a_tree_says_how_to_get_one(browser, live_server, curation_ws):
    with open_viewer(browser, live_server.url, curation_ws.tokens["curator"]) as page:
        wait_ready(page)
        page.wait_for_function("() => window.__corral.climb && window.__corral.climb.missing")
        click_point(page, 0)
        page.wait_for_function("() => window.__corral.selectedCount() > 0")
        before = page.evaluate(SELECTION)
        assert "none on this map" in level(page)
        page.keyboard.press("ArrowUp")
        page.wait_for_function("() => document.querySelector('#toast').textContent.includes('keeps no cluster tree')")
        assert page.evaluate(SELECTION) == before
        assert page.errors == []


def test_the_viewer_tree_follows_the_library_rule(browser, tmp_path):
    """hierarchy.js picks, for every node, the same points as corral.pipeline.hierarchy.node_members
    (the rule the docs state), and finds a selection's node by its clusters."""
    cur, _ = nested_curation_ws(tmp_path / "ws")
    with LiveServer(cur.root) as srv:
        import httpx

        auth = cur.auth("viewer")
        meta = httpx.get(f"{srv.url}/api/maps/main", headers=auth).json()
        _, cols = unpack(httpx.get(f"{srv.url}{meta['hierarchy_url']}", headers=auth).content)
        _, pts = unpack(httpx.get(f"{srv.url}{meta['points_url']}", headers=auth).content)
        cluster = pts["cluster"].astype(np.int64) - 1
        expected = [node_members(dict(cols), v, cluster).tolist() for v in range(cols["node_parent"].size)]
        with browser_context(browser) as ctx:
            page = ctx.new_page()
            page.goto(f"{srv.url}/api/health")
            got = page.evaluate(
                """async ([meta, token]) => {
                const { Tree } = await import('/src/hierarchy.js');
                const { parseContainer } = await import('/src/container.js');
                const get = async (u) => parseContainer(await (await fetch(u, { headers: { Authorization: `Bearer ${token}` } })).arrayBuffer());
                const [h, p] = await Promise.all([get(meta.hierarchy_url), get(meta.points_url)]);
                const t = new Tree(h.cols, p.cols.cluster);
                const members = Array.from({ length: t.m }, (_, v) => t.members(v));
                const c0 = members[t.nodeOf(0)], c1 = members[t.nodeOf(1)];
                return { members, one: t.nodeOfPoints(c0).node, two: t.nodeOfPoints(c0.concat(c1)).node, root: t.describe(0) };
            }""",
                [meta, cur.tokens["viewer"]],
            )
        assert got["members"] == expected
        assert got["one"] == cols["cluster_node"][0]
        n0, n1 = int(cols["cluster_node"][0]), int(cols["cluster_node"][1])
        parent = cols["node_parent"]
        lca = int(parent[n0]) if parent[n0] == parent[n1] else 0
        assert got["two"] == lca
        assert got["root"] == "the whole map · 4 clusters"
