"""The review page and the label-error queue in headless Chromium against the real server, on a
real map of scikit-learn's digits.

The review page shows one label and a page of up to 48 candidates; the curator hovers, clicks the
tiles that do not match (a second click unmarks) and submits with Enter: the tiles left alone are
named and the clicked ones excluded in one event, and every tile's byproducts (place on the page,
hovers, clicks with positions, time to decision, the curator) reach the interactions store and its
export. The label-error queue lists items named wrong on purpose; one is fixed from the queue with
the name box, the other two on a review page of the label's own items."""

from __future__ import annotations

import contextlib
import json
import random
import shutil

import httpx
import pytest

from tests.api.conftest import LiveServer
from tests.api.viewer_helpers import open_viewer, shot, wait_ready
from tests.digits import by_class, digits_workspace

pytestmark = pytest.mark.browser

WAIT = 60_000
@pytest.fixture(scope="module")
def digits_built(tmp_path_factory):
    """The digits embedded and mapped once for this module (no labels)."""
    return digits_workspace(tmp_path_factory.mktemp("review-digits"))


@contextlib.contextmanager
def serve(built, root):
    """A copy of the built workspace, served by the real app, with ``ana`` as a curator."""
    from corral.api.auth import UserStore

    shutil.copytree(built, root, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json", "interactions.sqlite*"))
    token = UserStore(root).add("ana", role="curator")
    with LiveServer(root) as srv:
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        name = api.get("/api/maps").json()["maps"][0]["name"]
        ids = srv.server.config.app.state.ctx.maps.get(name).ids.to_pylist()  # the viewer's point order
        try:
            yield srv, token, api, name, ids
        finally:
            api.close()


def name_samples(api, name, ids, truth, per_class: int, seed: int, *, first: int | None = None) -> None:
    """Name a seeded random ``per_class`` items of each digit (of the ``first`` digits only, when
    given), one assign per digit."""
    rng = random.Random(seed)
    for c, idx in sorted(by_class(ids, truth).items())[:first]:
        assert api.post(f"/api/maps/{name}/actions/assign", json={"indices": rng.sample(idx, per_class), "label": f"digit {c}"}).status_code == 200


@pytest.fixture(scope="module")
def review_viewer(digits_built, tmp_path_factory):
    """8 random items of each digit named: the model suggests groups."""
    built, truth = digits_built
    root = tmp_path_factory.mktemp("review-viewer") / "ws"
    with serve(built, root) as (srv, token, api, name, ids):
        name_samples(api, name, ids, truth, 8, 0)
        yield srv, token, api, name, ids, truth, root


def store_of(srv):
    from corral.api.deps import label_service

    return label_service(srv.server.config.app.state.ctx).store


def exported(root, store, out) -> list[dict]:
    """The rows of ``corral export --format interactions`` (the same function the command calls)."""
    from corral.storage.exports import export

    export(root, format="interactions", out=out, store=store)
    return [json.loads(line) for line in out.read_text().splitlines()]


def tile_box(page, order: int) -> dict:
    return page.locator(f'#review-grid .rtile[data-order="{order}"]').bounding_box()


def open_review_of_learn_group(page, *, key: bool = False):
    """G opens Learn; the group's "review page" button (or V) opens its review page. Returns the group."""
    page.keyboard.press("g")
    page.wait_for_function("() => window.__corral.learn.group && document.querySelectorAll('#learn-grid .tile').length > 1", timeout=WAIT)
    group = page.evaluate("() => ({ label: window.__corral.learn.group.label, indices: window.__corral.learn.group.indices })")
    assert page.locator("#learn-review").is_visible()
    if key:  # the mouse stays where it was, off the page's tiles, so no tile is entered by chance
        page.keyboard.press("v")
    else:
        page.locator("#learn-review").click()
    page.wait_for_function("() => window.__corral.review.phase === 'page'", timeout=WAIT)
    # every thumbnail shown before the curator looks (so each tile's shown_ms is known)
    page.wait_for_function("() => [...document.querySelectorAll('#review-grid img')].every((i) => i.complete && i.naturalWidth > 0)", timeout=WAIT)
    return group


def test_review_a_suggested_group_names_the_rest_and_keeps_every_tile_trace(browser, review_viewer, tmp_path):
    srv, token, api, name, ids, truth, root = review_viewer
    store = store_of(srv)
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        group = open_review_of_learn_group(page, key=True)
        label = group["label"]
        shown = group["indices"][:48]
        n = len(shown)
        assert n >= 6, group
        # the page: this label, the group's candidates least sure first, 8 to a row
        assert label in page.locator("#review-title").inner_text()
        assert page.evaluate("() => [...document.querySelectorAll('#review-grid .rtile')].map((t) => Number(t.dataset.i))") == shown
        assert tile_box(page, 1)["y"] == tile_box(page, 0)["y"] and tile_box(page, 1)["x"] > tile_box(page, 0)["x"]
        if n > 8:
            assert tile_box(page, 8)["y"] > tile_box(page, 0)["y"] and abs(tile_box(page, 8)["x"] - tile_box(page, 0)["x"]) < 1
        version = page.evaluate("() => window.__corral.review.version")
        # two tiles that do not match: those of another digit when the group has any, else two chosen
        digit = label.split()[-1]
        wrong = [k for k, i in enumerate(shown) if truth[ids[i]] != digit][:2]
        a, b = (wrong + [k for k in (3, 5) if k not in wrong])[:2]
        c = next(k for k in (4, 2, 1, 0) if k not in (a, b))  # marked, then unmarked again
        hovered = [0, 1, 2]
        for k in hovered:  # look at a few tiles without clicking
            box = tile_box(page, k)
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_timeout(40)
        clicks = {a: [(10, 15)], b: [(20, 25)], c: [(5, 6), (30, 31)]}
        for k, spots in clicks.items():
            box = tile_box(page, k)
            for x, y in spots:
                page.mouse.click(box["x"] + x, box["y"] + y)
                page.wait_for_timeout(30)
        marked = page.evaluate("() => [...document.querySelectorAll('#review-grid .rtile.not')].map((t) => Number(t.dataset.order))")
        assert sorted(marked) == sorted([a, b])  # clicked tiles are marked; clicked twice is unmarked
        assert "not this" in page.evaluate(f"() => getComputedStyle(document.querySelector('#review-grid .rtile[data-order=\"{a}\"]'), '::after').content")
        head = page.locator("#review .review-head").inner_text()
        assert f"name {n - 2:,}, exclude 2" in head
        shot(page, "viewer-review.png")
        page.mouse.move(5, 5)  # off the grid: the last hover closes
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.__corral.review.phase === 'done'", timeout=WAIT)
        summary = page.locator("#review-summary").inner_text()
        assert summary.startswith(f'named {n - 2:,} as "{label}" · excluded 2'), summary
        assert page.locator("#review-excluded img").count() == 2

        # the label store: one event named exactly the matching tiles and excluded the clicked ones
        events = api.get("/api/events", params={"since": version}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign" and events[0]["user"] == "ana", events
        snap = store.snapshot()
        out = {ids[shown[a]], ids[shown[b]]}
        for i in shown:
            if ids[i] in out:
                assert snap.items.get(ids[i], (None,))[0] != label and label in snap.exclusions.get(ids[i], [])
            else:
                assert snap.items[ids[i]][0] == label
        assert sum(1 for v in snap.items.values() if v[0] == label) == 8 + n - 2

        # the interactions: every tile of the page, with its place, hovers, clicks and the curator
        rows = exported(root, store, tmp_path / "interactions.jsonl")
        assert len(rows) == n
        assert {r["curator"] for r in rows} == {"ana"} and {r["label"] for r in rows} == {label} and {r["source"] for r in rows} == {"suggested"}
        assert {r["event_id"] for r in rows} == {events[0]["id"]}
        by_order = {r["order"]: r for r in rows}
        assert sorted(by_order) == list(range(n))
        for k, r in by_order.items():
            assert r["item_id"] == ids[shown[k]] and r["point_index"] == shown[k]
            assert (r["row"], r["col"]) == (k // 8, k % 8)
            assert r["decision"] == ("not" if k in (a, b) else "match")
            assert r["shown_ms"] is not None and r["decided_ms"] >= r["shown_ms"]
            touched = k in hovered or k in clicks
            assert (r["hover_count"] >= 1) == touched, (k, r["hovers"])
            for enter, leave in r["hovers"]:
                assert leave is not None and leave >= enter
            if k in clicks:
                got = [(cl["x"], cl["y"]) for cl in r["clicks"]]  # inside the tile, to the pixel (tiles sit at fractional pixels)
                assert len(got) == len(clicks[k]) and all(abs(x - x0) <= 1 and abs(y - y0) <= 1 for (x, y), (x0, y0) in zip(got, clicks[k])), (k, got)
                assert r["decided_ms"] == r["clicks"][-1]["t"]
                assert r["hovers"][0][0] <= r["clicks"][0]["t"]  # the pointer entered before it clicked
            else:
                assert r["clicks"] == []
        last_click = max(cl["t"] for r in rows for cl in r["clicks"])
        assert all(r["decided_ms"] >= last_click for r in rows if not r["clicks"])  # decided by the submit

        # the next label's page is offered: Enter opens it, Escape closes the page
        page.wait_for_function("() => !document.querySelector('#review-next').hidden", timeout=WAIT)
        nxt = page.locator("#review-next").inner_text()
        assert nxt.startswith("next: review") and f'"{label}"' not in nxt
        page.keyboard.press("Enter")
        page.wait_for_function("(l) => window.__corral.review.phase === 'page' && window.__corral.review.label !== l", arg=label, timeout=WAIT)
        assert page.evaluate("() => window.__corral.review.label") in nxt
        assert page.locator("#review-grid .rtile").count() >= 1
        page.keyboard.press("Escape")
        assert page.locator("#review").is_hidden()
        page.keyboard.press("?")
        help_text = page.locator("#help-list").inner_text()
        assert "review page" in help_text and "Enter (Review)" in help_text
        assert not page.errors, page.errors


def test_a_review_page_made_for_older_labels_is_refused_and_reloaded(browser, review_viewer):
    """Another change after the page was made: Enter is refused (409), nothing is named or
    recorded, the page says so and shows a fresh page of the same label."""
    from corral.storage.interactions import InteractionStore

    srv, token, api, name, ids, truth, root = review_viewer
    store = store_of(srv)
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        open_review_of_learn_group(page)
        old = page.evaluate("() => ({ id: window.__corral.review.pageId, version: window.__corral.review.version, label: window.__corral.review.label })")
        shown = set(page.evaluate("() => window.__corral.review.tiles.map((t) => t.index)"))
        with InteractionStore.open(root) as ist:
            pages_before = ist.count()[0]
        snap = store.snapshot()
        free = next(k for k, i in enumerate(ids) if i not in snap.items and k not in shown)
        assert api.post(f"/api/maps/{name}/actions/assign", json={"indices": [free], "label": "someone else's"}).status_code == 200
        page.locator("#review-grid .rtile").first.click()
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#review-message').textContent.includes('labels changed')", timeout=WAIT)
        page.wait_for_function("(id) => window.__corral.review.phase === 'page' && window.__corral.review.pageId !== id", arg=old["id"], timeout=WAIT)
        now = page.evaluate("() => ({ version: window.__corral.review.version, marked: window.__corral.review.tiles.filter((t) => t.marked).length })")
        assert now["version"] > old["version"] and now["marked"] == 0
        assert "fresh page" in page.locator("#review-message").inner_text()
        events = api.get("/api/events", params={"since": old["version"]}).json()["events"]
        assert [e["payload"]["label"] for e in events] == ["someone else's"]  # the refused page named nothing
        with InteractionStore.open(root) as ist:
            assert ist.count()[0] == pages_before
        assert not [e for e in page.errors if "409 (Conflict)" not in e], page.errors


@pytest.fixture(scope="module")
def mislabelled_viewer(digits_built, tmp_path_factory):
    """12 items of each digit named, and 3 zeros named "digit 1" by mistake: three plain zeros (the
    nearest to the zeros' mean image), which any label-error check must doubt as ones."""
    import numpy as np

    from corral.pipeline.loop import map_vectors

    built, truth = digits_built
    root = tmp_path_factory.mktemp("mislabelled-viewer") / "ws"
    with serve(built, root) as (srv, token, api, name, ids):
        classes = by_class(ids, truth)
        rng = random.Random(3)
        mv = map_vectors(root)
        row = {i: r for r, i in enumerate(mv.ids.tolist())}
        zeros = mv.vectors[[row[ids[k]] for k in classes["0"]]]
        near = np.argsort(((zeros - zeros.mean(0)) ** 2).sum(1), kind="stable")[:3]
        wrong = [classes["0"][int(j)] for j in near]
        for c, idx in sorted(classes.items()):
            pick = rng.sample([k for k in idx if k not in wrong], 12) + (wrong if c == "1" else [])
            assert api.post(f"/api/maps/{name}/actions/assign", json={"indices": pick, "label": f"digit {c}"}).status_code == 200
        yield srv, token, api, name, ids, truth, root, wrong


def test_the_label_error_queue_lists_the_wrong_items_and_they_are_fixed_in_the_viewer(browser, mislabelled_viewer):
    srv, token, api, name, ids, truth, root, wrong = mislabelled_viewer
    store = store_of(srv)
    with open_viewer(browser, srv.url, token) as page:
        wait_ready(page)
        page.keyboard.press("g")
        page.wait_for_function("() => window.__corral.learn.round && window.__corral.learn.round.ready", timeout=WAIT)
        page.locator("#learn-tab-issues").click()
        assert "possible label errors" in page.locator("#learn-tab-issues").inner_text()
        listed = page.evaluate("() => [...document.querySelectorAll('#learn-grid .tile')].map((t) => Number(t.dataset.i))")
        assert set(wrong) <= set(listed), (wrong, listed)
        # one from the queue: its tile says what it is named now; click selects it, the name box fixes it
        first = page.locator(f'#learn-grid .tile[data-i="{wrong[0]}"]')
        assert "now: digit 1" in first.inner_text() and "model: digit 1" not in first.inner_text()
        version = page.evaluate("() => window.__corral.store.labels.version")
        first.click()
        page.wait_for_function("() => window.__corral.selectedCount() === 1")
        assert page.evaluate("() => window.__corral.store.selection.list()[0]") == wrong[0]
        page.locator("#name-input").click()
        page.keyboard.type("digit 0")
        page.keyboard.press("Enter")
        page.wait_for_function("(v) => window.__corral.store.labels.version > v", arg=version, timeout=WAIT)
        snap = store.snapshot()
        assert snap.items[ids[wrong[0]]][0] == "digit 0"
        assert all(snap.items[ids[k]][0] == "digit 1" for k in wrong[1:])
        events = api.get("/api/events", params={"since": version}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign" and events[0]["item_count"] == 1, events
        # the queue of the fresh round no longer holds it as a "digit 1"
        page.wait_for_function("(v) => window.__corral.learn.round.labels_version > v", arg=version, timeout=WAIT)
        page.locator("#learn-tab-issues").click()
        issues = page.evaluate("() => window.__corral.learn.round.issues")
        assert not [e for e in issues if e["index"] == wrong[0] and e.get("current") == "digit 1"]

        # the other two on a review page of "digit 1"'s own items: the doubtful come first
        page.keyboard.press("Escape")
        page.locator('.label-row[data-label="digit 1"] [data-act="review"]').click()
        page.wait_for_function("() => window.__corral.review.phase === 'page'", timeout=WAIT)
        assert page.evaluate("() => window.__corral.review.source") == "members"
        order = page.evaluate("() => window.__corral.review.tiles.map((t) => t.index)")
        members = [k for k, i in enumerate(ids) if snap.items.get(i, ("",))[0] == "digit 1"]
        assert sorted(order) == sorted(members)  # 14 items: all on one page
        doubted = [e["index"] for e in page.evaluate("() => window.__corral.learn.round.issues") if e.get("current") == "digit 1"]
        assert order[: len(doubted)] == doubted and set(wrong[1:]) <= set(doubted), (wrong, doubted, order)  # the doubtful first
        version = page.evaluate("() => window.__corral.review.version")
        for k in wrong[1:]:
            page.locator(f'#review-grid .rtile[data-i="{k}"]').click()
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.__corral.review.phase === 'done'", timeout=WAIT)
        assert page.locator("#review-summary").inner_text().startswith(f'named {len(members) - 2} as "digit 1" · excluded 2')
        snap = store.snapshot()
        for k in wrong[1:]:
            assert ids[k] not in snap.items and "digit 1" in snap.exclusions.get(ids[k], [])
        assert all(snap.items[ids[k]][0] == "digit 1" for k in members if k not in wrong)
        events = api.get("/api/events", params={"since": version}).json()["events"]
        assert len(events) == 1 and events[0]["kind"] == "assign", events
        rows = exported(root, store, root.parent / "interactions.jsonl")
        assert len(rows) == len(members) and {r["source"] for r in rows} == {"members"}
        assert {r["item_id"] for r in rows if r["decision"] == "not"} == {ids[k] for k in wrong[1:]}
        assert not page.errors, page.errors


def test_a_page_of_the_likeliest_items_is_reviewed_from_the_learn_panel(browser, digits_built, tmp_path):
    """3 items of each digit named: the model is not sure enough of any group, but the Learn
    panel's "page by page" lists a review page of each digit's likeliest items; one is opened,
    the tiles of other digits clicked, and the page submitted: the rest named, the clicked ones
    "not" the digit, the page stored with its source."""
    built, truth = digits_built
    root = tmp_path / "ws"
    with serve(built, root) as (srv, token, api, name, ids):
        name_samples(api, name, ids, truth, 3, 1)
        store = store_of(srv)
        with open_viewer(browser, srv.url, token) as page:
            wait_ready(page)
            page.keyboard.press("g")
            page.wait_for_function("() => window.__corral.learn.round && window.__corral.learn.round.ready", timeout=WAIT)
            rnd = page.evaluate("() => window.__corral.learn.round")
            assert rnd["likely"], rnd.get("reason")
            page.locator("#learn-tab-likely").click()
            rows = page.locator("#learn-grid .likely-row")
            assert rows.count() == len(rnd["likely"]) and "page by page" in page.locator("#learn-tab-likely").inner_text()
            first = rnd["likely"][0]
            assert rows.first.get_attribute("data-label") == first["label"]
            rows.first.locator("button").click()
            page.wait_for_function("() => window.__corral.review.phase === 'page'", timeout=WAIT)
            got = page.evaluate("() => ({ source: window.__corral.review.source, label: window.__corral.review.label, shown: window.__corral.review.tiles.map((t) => t.index) })")
            assert got == {"source": "likely", "label": first["label"], "shown": first["indices"]}
            assert "not sure" in page.locator("#review-source").inner_text()
            digit = first["label"].split()[-1]
            wrong = [k for k, i in enumerate(first["indices"]) if truth[ids[i]] != digit]
            for k in wrong:
                page.locator(f'#review-grid .rtile[data-order="{k}"]').click()
            page.keyboard.press("Enter")
            page.wait_for_function("() => window.__corral.review.phase === 'done'", timeout=WAIT)
            snap = store.snapshot()
            for k, i in enumerate(first["indices"]):
                if k in wrong:
                    assert ids[i] not in snap.items and first["label"] in snap.exclusions.get(ids[i], [])
                else:
                    assert snap.items[ids[i]][0] == first["label"]
            rows = exported(root, store, tmp_path / "interactions.jsonl")
            assert len(rows) == len(first["indices"]) and {r["source"] for r in rows} == {"likely"}
            assert sorted(r["order"] for r in rows if r["decision"] == "not") == wrong
            # the next label's likely page is offered
            page.wait_for_function("() => !document.querySelector('#review-next').hidden", timeout=WAIT)
            assert page.locator("#review-next").inner_text().startswith("next: review")
            assert not page.errors, page.errors


def test_v_opens_the_likeliest_items_when_the_model_suggests_no_group(browser, digits_built, tmp_path):
    """Three digits named: too few labels to tell unnamed digits from named ones, so the model
    suggests no group; V (nothing selected, Learn closed) opens the first label's page of its
    likeliest items instead of an empty page."""
    built, truth = digits_built
    with serve(built, tmp_path / "ws") as (srv, token, api, name, ids):
        name_samples(api, name, ids, truth, 4, 2, first=3)
        rnd = api.get(f"/api/maps/{name}/learn").json()
        assert rnd["ready"] and not rnd["groups"] and rnd["likely"], rnd.get("reason")
        with open_viewer(browser, srv.url, token) as page:
            wait_ready(page)
            page.keyboard.press("v")
            page.wait_for_function("() => window.__corral.review.phase === 'page'", timeout=WAIT)
            got = page.evaluate("() => ({ source: window.__corral.review.source, label: window.__corral.review.label, shown: window.__corral.review.tiles.map((t) => t.index) })")
            assert got == {"source": "likely", "label": rnd["likely"][0]["label"], "shown": rnd["likely"][0]["indices"]}
            assert not page.errors, page.errors


def test_a_cut_leaves_the_least_sure_tiles_out_with_no_verdict(browser, digits_built, tmp_path):
    """⤒ on a tile leaves it and every tile before it (the less sure) out of the page: they are
    shown as left out, a click on them marks nothing, ⤒ again takes the cut back; submitted, they
    stay unlabelled with no "not this" stored, the tiles after the cut are named or excluded as
    marked, and each tile's decision is stored ("left" for the cut's)."""
    built, truth = digits_built
    with serve(built, tmp_path / "ws") as (srv, token, api, name, ids):
        name_samples(api, name, ids, truth, 8, 0)
        store = store_of(srv)
        with open_viewer(browser, srv.url, token) as page:
            wait_ready(page)
            group = open_review_of_learn_group(page, key=True)
            label, shown = group["label"], group["indices"][:48]
            assert len(shown) >= 6, group

            def cut_at(k: int) -> None:
                page.locator(f'#review-grid .rtile[data-order="{k}"]').hover()
                page.locator(f'#review-grid .rtile[data-order="{k}"] .r-cut').click()

            def left() -> list[int]:
                return page.evaluate("() => [...document.querySelectorAll('#review-grid .rtile.left')].map((t) => Number(t.dataset.order))")

            cut_at(2)
            assert left() == [0, 1, 2]
            assert page.evaluate("() => document.querySelectorAll('#review-grid .rtile.not').length") == 0  # the cut marks nothing
            head = page.locator("#review .review-head").inner_text()
            assert f"name {len(shown) - 3:,}, leave 3" in head and "3 left out (no verdict)" in head, head
            box = tile_box(page, 1)
            page.mouse.click(box["x"] + 30, box["y"] + 30)  # a click on a tile left out does nothing
            assert page.evaluate("() => document.querySelectorAll('#review-grid .rtile.not').length") == 0
            cut_at(2)  # the same tile again: the cut is taken back
            assert left() == []
            cut_at(2)
            box = tile_box(page, 4)
            page.mouse.click(box["x"] + 20, box["y"] + 20)  # one tile after the cut marked "not"
            version = page.evaluate("() => window.__corral.review.version")
            page.mouse.move(5, 5)
            page.keyboard.press("Enter")
            page.wait_for_function("() => window.__corral.review.phase === 'done'", timeout=WAIT)
            summary = page.locator("#review-summary").inner_text()
            assert summary == f'named {len(shown) - 4:,} as "{label}" · excluded 1 (remembered as not "{label}") · left 3 out (no verdict)', summary
            events = api.get("/api/events", params={"since": version}).json()["events"]
            assert len(events) == 1 and events[0]["kind"] == "assign", events
            snap = store.snapshot()
            for k, i in enumerate(shown):
                state, excluded = snap.items.get(ids[i], (None,))[0], label in snap.exclusions.get(ids[i], [])
                if k <= 2:
                    assert state is None and not excluded, (k, state)
                elif k == 4:
                    assert state != label and excluded
                else:
                    assert state == label
            rows = _interactions_rows(srv)
            assert [r["decision"] for r in rows] == ["left"] * 3 + ["match"] + ["not"] + ["match"] * (len(shown) - 5)
            assert all(r["decided_ms"] is not None for r in rows)
            assert not page.errors, page.errors


def _interactions_rows(srv) -> list[dict]:
    from corral.storage.interactions import InteractionStore

    with InteractionStore.open(srv.server.config.app.state.ctx.workspace) as s:
        return s.rows()
