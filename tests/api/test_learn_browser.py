"""The learning loop in the viewer, in headless Chromium against the real server, on a real map of
scikit-learn's digits: open the Learn panel, read the model's figures, mark one tile of the suggested
group as "not this", accept the rest with the keyboard, and find them named in one event; the panel
says what it named and moves on to the next group; the label-errors queue shows its tiles."""

from __future__ import annotations

import random
import shutil

import httpx
import pytest

from tests.api.conftest import LiveServer
from tests.api.viewer_helpers import open_viewer, shot, wait_ready
from tests.digits import by_class, digits_workspace

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def digits_viewer(tmp_path_factory):
    """The digits mapped, served by the real app, with 8 random items of each digit named."""
    from corral.api.auth import UserStore

    built, truth = digits_workspace(tmp_path_factory.mktemp("learn-digits"))
    root = tmp_path_factory.mktemp("learn-viewer") / "ws"
    shutil.copytree(built, root, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json"))
    users = UserStore(root)
    token = users.add("ana", role="curator")
    with LiveServer(root) as srv:
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        name = api.get("/api/maps").json()["maps"][0]["name"]
        ids = srv.server.config.app.state.ctx.maps.get(name).ids.to_pylist()  # the viewer's point order
        rng = random.Random(0)
        for c, idx in sorted(by_class(ids, truth).items()):
            r = api.post(f"/api/maps/{name}/actions/assign", json={"indices": rng.sample(idx, 8), "label": f"digit {c}"})
            assert r.status_code == 200, r.text
        yield srv, token, api, name, ids
        api.close()


def test_accept_a_suggested_group_minus_a_marked_tile(browser, digits_viewer):
    from corral.api.deps import label_service

    srv, token, api, name, ids = digits_viewer
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        page.keyboard.press("g")
        page.wait_for_function("() => document.querySelectorAll('#learn-grid .tile').length > 1", timeout=60_000)
        figures = page.locator("#learn-figures").inner_text()
        assert "held-out accuracy" in figures and "estimated on what is left" in figures and "unlabelled" in figures
        assert "80" in figures  # labelled so far
        rnd = api.get(f"/api/maps/{name}/learn").json()
        group = page.evaluate("() => ({ label: window.__corral.learn.group.label, indices: window.__corral.learn.group.indices })")
        assert group["label"] == rnd["groups"][0]["label"] and group["indices"] == rnd["groups"][0]["indices"]
        # least sure first: the first tile is the group's least sure item; mark the second as "not this"
        marked = group["indices"][1]
        page.locator(f'#learn-grid .tile[data-i="{marked}"]').click()
        assert page.locator("#learn-grid .tile.marked").count() == 1
        shot(page, "viewer-learn.png")
        version = rnd["labels_version"]
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#learn-message').textContent.startsWith('named')", timeout=60_000)
        n = len(group["indices"]) - 1
        assert page.locator("#learn-message").inner_text().startswith(f'named {n:,} as "{group["label"]}"')
        # one event named the group minus the marked tile (and recorded the mark as an exclusion)
        events = api.get("/api/events", params={"since": version}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign", events
        snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
        named = {ids[i] for i in group["indices"] if i != marked}
        assert all(snap.items[i][0] == group["label"] for i in named)
        assert snap.items.get(ids[marked], (None,))[0] != group["label"]
        assert group["label"] in snap.exclusions.get(ids[marked], [])
        # the panel fetched the new round and shows its best group, without the items just named
        page.wait_for_function("(v) => { const l = window.__corral.learn; return l.round && l.round.labels_version > v && l.group; }", arg=version, timeout=60_000)
        now = page.evaluate("() => window.__corral.learn.group.indices")
        assert now != group["indices"] and not set(now) & {i for i in group["indices"] if i != marked}
        assert page.locator("#learn-figures").inner_text().count(f"{80 + n}") >= 1
        assert f"{float(n):.1f} items labelled per action" in page.locator("#learn-session").inner_text()
        shot(page, "viewer-learn-next.png")
        # N skips to another group
        before = page.evaluate("() => window.__corral.learn.pos")
        if page.evaluate("() => window.__corral.learn.round.groups.length") > 1:
            page.keyboard.press("n")
            assert page.evaluate("() => window.__corral.learn.pos") != before
        # the label-errors queue renders its tiles, with the model's and the current label
        page.locator("#learn-tab-issues").click()
        issues = page.evaluate("() => window.__corral.learn.round.issues")
        assert page.locator("#learn-grid .tile").count() == len(issues)
        if issues:
            tile = page.locator("#learn-grid .tile").first
            assert f"model: {issues[0]['label']}" in tile.inner_text() and f"now: {issues[0]['current']}" in tile.inner_text()
            shot(page, "viewer-learn-issues.png")
            tile.click()
            page.wait_for_function("() => window.__corral.selectedCount() === 1")
            assert page.evaluate("() => window.__corral.store.selection.list()[0]") == issues[0]["index"]
        # a round made old by another change is refused: the panel says so and fetches the new round
        page.locator("#learn-tab-groups").click()
        old = page.evaluate("() => window.__corral.learn.round.labels_version")
        free = next(k for k, i in enumerate(ids) if i not in snap.items and k not in now)
        assert api.post(f"/api/maps/{name}/actions/assign", json={"indices": [free], "label": "digit 0"}).status_code == 200
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#learn-message').textContent.includes('labels changed')", timeout=30_000)
        page.wait_for_function("(v) => window.__corral.learn.round.labels_version > v", arg=old, timeout=60_000)
        # the help lists the loop's keys
        page.keyboard.press("?")
        help_text = page.locator("#help-list").inner_text()
        assert "learning loop" in help_text and "next suggested group" in help_text
        assert not [e for e in page.errors if "409 (Conflict)" not in e], page.errors  # the refused old round is expected


@pytest.fixture(scope="module")
def half_named_viewer(tmp_path_factory):
    """The digits served with 12 items of each of 0-4 named and nothing of 5-9."""
    from corral.api.auth import UserStore

    built, truth = digits_workspace(tmp_path_factory.mktemp("half-digits"))
    root = tmp_path_factory.mktemp("half-viewer") / "ws"
    shutil.copytree(built, root, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json"))
    token = UserStore(root).add("ana", role="curator")
    with LiveServer(root) as srv:
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        name = api.get("/api/maps").json()["maps"][0]["name"]
        ids = srv.server.config.app.state.ctx.maps.get(name).ids.to_pylist()
        rng = random.Random(1)
        classes = by_class(ids, truth)
        for c in "01234":
            idx = classes[c]
            assert api.post(f"/api/maps/{name}/actions/assign", json={"indices": rng.sample(idx, 12), "label": f"digit {c}"}).status_code == 200
        yield srv, token, api, name, ids, truth
        api.close()


def test_a_group_of_a_class_nobody_named_is_proposed_and_named(browser, half_named_viewer):
    """With half the digits named, ] reaches a proposal of unlabelled look-alikes (regrouped by the
    labels, kind "group"); the line says so, the selection is its points, and a typed name names
    exactly them in one event."""
    from corral.api.deps import label_service

    srv, token, api, name, ids, truth = half_named_viewer
    rnd = api.get(f"/api/maps/{name}/learn").json()
    kinds = [e["kind"] for e in rnd["next"]]
    assert "group" in kinds, kinds
    at = kinds.index("group")
    grp = rnd["next"][at]
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        for k in range(at + 1):  # the first ] fetches the round and shows proposal 0
            page.keyboard.press("Escape")  # out of the name box, which each proposal focuses
            page.keyboard.press("]")
            page.wait_for_function("(n) => window.__corral.proposal.pos === n", arg=k, timeout=60_000)
        line = page.locator("#next-line").inner_text()
        if grp.get("beside"):  # a branch beside a named label: more of it, or a look-alike nobody named
            assert line == f'next: {len(grp["indices"]):,} unlabelled that look alike, beside "{grp["beside"]}" (more of it, or a look-alike nobody named)', line
        else:
            assert line == f"next: {len(grp['indices']):,} unlabelled that look alike (regrouped by what the labels taught)", line
        selected = page.evaluate("() => Array.from(window.__corral.store.selection.list())")
        assert selected == sorted(grp["indices"])
        page.locator("#name-input").click()
        page.keyboard.type("look-alikes")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#next-line').textContent.includes('\"look-alikes\" — next:')", timeout=60_000)
        events = api.get("/api/events", params={"since": rnd["labels_version"]}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign", events
        snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
        assert {i for i, v in snap.items.items() if v[0] == "look-alikes"} == {ids[k] for k in selected}
        assert not page.errors, page.errors


def name_and_follow(page, indices: list[int], label: str) -> None:
    """Select ``indices``, name them with the name box, and wait for the round the naming starts:
    the first offer comes at once, the round learnt meanwhile may replace it while untouched."""
    page.evaluate("(idx) => window.__corral.store.select(idx, 'replace')", indices)
    page.locator("#name-input").click()
    page.keyboard.type(label)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#next-line').textContent.includes('next:')", timeout=60_000)
    page.wait_for_function("() => !window.__corral.proposal.following", timeout=60_000)


def test_name_then_the_next_proposal_is_selected(browser, digits_viewer):
    """Name a selection with the name box: the server's next proposal becomes the selection and the
    panel says so, with the name box ready; typing a name + Enter names exactly those points in one
    event; ] moves on to the following proposal."""
    from corral.api.deps import label_service

    srv, token, api, name, ids = digits_viewer
    snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        # a handful of unlabelled points, selected and named with the name box
        name_and_follow(page, [k for k, i in enumerate(ids) if i not in snap.items][:5], "first pick")
        rnd = api.get(f"/api/maps/{name}/learn").json()
        nxt = rnd["next"][0]
        selected = page.evaluate("() => Array.from(window.__corral.store.selection.list())")
        assert selected == sorted(nxt["indices"]) and selected, (nxt["kind"], len(selected))
        line = page.locator("#next-line").inner_text()
        what = {
            "cluster": f"cluster {nxt.get('cluster')}, {len(selected):,} unlabelled",
            "suggested": f'"{nxt.get("label")}", {len(selected):,} suggested',
            "group": f'{len(selected):,} unlabelled that look alike, beside "{nxt.get("beside")}"' if nxt.get("beside") else f"{len(selected):,} unlabelled that look alike",
        }[nxt["kind"]]
        assert line.startswith(f'named 5 as "first pick" — next: {what}'), line
        shot(page, "viewer-next.png")
        # the name box has the focus: type the next name right away
        assert page.evaluate("() => document.activeElement.id") == "name-input"
        version = rnd["labels_version"]
        page.keyboard.type("second pick")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => { const t = document.querySelector('#next-line').textContent; return t.startsWith('named') && t.includes('\"second pick\" — next:'); }",
            timeout=60_000,
        )
        page.wait_for_function("() => !window.__corral.proposal.following", timeout=60_000)
        events = api.get("/api/events", params={"since": version}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign", events
        snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
        assert {i for i, v in snap.items.items() if v[0] == "second pick"} == {ids[k] for k in selected}
        # ] goes to the following proposal of the fresh round
        rnd = api.get(f"/api/maps/{name}/learn").json()
        page.keyboard.press("Escape")  # out of the name box
        assert page.evaluate("() => Array.from(window.__corral.store.selection.list())") == sorted(rnd["next"][0]["indices"])
        if len(rnd["next"]) > 1:
            page.keyboard.press("]")
            page.wait_for_function("(n) => window.__corral.proposal.pos === 1", arg=1, timeout=30_000)
            assert page.evaluate("() => Array.from(window.__corral.store.selection.list())") == sorted(rnd["next"][1]["indices"])
        # a selection made while the naming is on its way is the curator's: it is left alone
        snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
        free = [k for k, i in enumerate(ids) if i not in snap.items][:3]
        page.evaluate(
            "async (f) => { const h = window.__corral; h.store.select([f[0]], 'replace'); const p = h.actions.assign('third pick'); h.store.select([f[1], f[2]], 'replace'); await p; }", free
        )
        page.wait_for_function("() => document.querySelector('#next-line').textContent.includes('\"third pick\" — next:')", timeout=60_000)
        assert "press ] to go there" in page.locator("#next-line").inner_text()
        assert page.evaluate("() => Array.from(window.__corral.store.selection.list())") == sorted(free[1:])
        page.keyboard.press("?")
        assert "following proposal" in page.locator("#help-list").inner_text()
        assert not page.errors, page.errors


def _interactions_store(srv):
    from corral.storage.interactions import InteractionStore

    return InteractionStore.open(srv.server.config.app.state.ctx.workspace)


def test_a_proposal_passed_over_comes_last(browser, digits_viewer):
    """] past a proposal, or another selection made while it is on offer, passes it over: in later
    rounds it comes after the others, in the order ``corral.pipeline.loop.passed_last`` gives the
    server's proposals (the simulated curator of ``bench/curate.py`` works by the same rule)."""
    import time

    import numpy as np

    from corral.api.deps import label_service
    from corral.pipeline.loop import passed_last

    srv, token, api, name, ids = digits_viewer
    snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        name_and_follow(page, [k for k, i in enumerate(ids) if i not in snap.items][:4], "pass a")
        page.keyboard.press("Escape")  # out of the name box
        # go past the model's suggested groups (never passed over) to a group or a cluster
        kinds = page.evaluate("() => window.__corral.proposal.list.map((e) => e.kind)")
        assert any(k != "suggested" for k in kinds), kinds
        for _ in range(len(kinds)):
            if page.evaluate("() => window.__corral.proposal.list[window.__corral.proposal.pos].kind") != "suggested":
                break
            page.keyboard.press("]")
        shown = page.evaluate("() => { const p = window.__corral.proposal; return Array.from(p.list[p.pos].indices); }")
        assert page.evaluate("() => window.__corral.proposal.passed.length") == 0
        store = _interactions_store(srv)
        earlier = len(store.pass_rows())  # the module's other tests pass proposals too
        page.keyboard.press("]")  # passes the one shown over
        assert page.evaluate("() => window.__corral.proposal.passed.map((s) => Array.from(s).sort((a, b) => a - b))") == [sorted(shown)]
        # ... and the server keeps it, with who and how, for every curator of the map
        for _ in range(100):
            if len(store.pass_rows()) > earlier:
                break
            time.sleep(0.1)
        (kept,) = store.pass_rows()[earlier:]
        assert kept["how"] == "skip" and kept["map"] == name and sorted(kept["items"]) == sorted(ids[i] for i in shown)
        # name the proposal now shown: the next round puts the passed one last
        page.locator("#name-input").click()
        page.keyboard.type("pass b")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#next-line').textContent.includes('\"pass b\" — next:')", timeout=60_000)
        page.wait_for_function("() => !window.__corral.proposal.following", timeout=60_000)
        rnd = api.get(f"/api/maps/{name}/learn").json()
        server = [{**e, "rows": np.asarray(e["indices"])} for e in rnd["next"]]
        want = passed_last(server, [np.asarray(shown)])
        got = page.evaluate("() => window.__corral.proposal.list.map((e) => [e.kind, e.indices[0] ?? null, e.indices.length])")
        assert got == [[e["kind"], e["indices"][0] if e["indices"] else None, len(e["indices"])] for e in want]
        late = [k for k, e in enumerate(want) if e["kind"] != "suggested" and np.isin(e["rows"], shown).sum() >= 0.8 * len(e["rows"])]
        assert all(k >= len(want) - len(late) for k in late), (late, len(want))
        # another selection made while a proposal is on offer passes it over too
        page.keyboard.press("Escape")
        if page.evaluate("() => window.__corral.proposal.pos") >= 0 and page.evaluate("() => window.__corral.proposal.list[window.__corral.proposal.pos].kind") != "suggested":
            snap = label_service(srv.server.config.app.state.ctx).store.snapshot()
            offered = set(page.evaluate("() => { const p = window.__corral.proposal; return Array.from(p.list[p.pos].indices); }"))
            other = [k for k, i in enumerate(ids) if i not in snap.items and k not in offered][:3]
            page.evaluate("(idx) => window.__corral.store.select(idx, 'replace')", other)
            assert page.evaluate("() => window.__corral.proposal.passed.length") == 2
            for _ in range(100):
                if len(store.pass_rows()) == earlier + 2:
                    break
                time.sleep(0.1)
            assert [r["how"] for r in store.pass_rows()[earlier:]] == ["skip", "replaced"]
        assert not page.errors, page.errors
