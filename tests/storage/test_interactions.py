"""The review byproducts store: pages kept exactly, bad pages refused whole, nothing lost."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from corral.storage.interactions import LIMITS, ROW_COLUMNS, DuplicatePage, InteractionError, InteractionStore, ReviewPage, ReviewTile


def _page(page_id: str = "p1", *, n: int = 3, **kw) -> ReviewPage:
    tiles = tuple(
        ReviewTile(
            item_id=f"item{k:03d}", row=k // 8, col=k % 8, order=k, decision="not" if k == 1 else "match", shown_ms=10.0 + k,
            hovers=((100.0 + k, 180.0 + k), (300.0, None)) if k == 1 else ((50.0, 75.5),), clicks=((150.0, 12.5, 30.0),) if k == 1 else (),
            decided_ms=150.0 if k == 1 else 900.0, point_index=40 + k,
        )
        for k in range(n)
    )
    base = dict(page_id=page_id, label="duck", map="main", source="members", shown_at=1_700_000_000.0, submitted_at=1_700_000_001.0, tiles=tiles, event_id=7, labels_version=7)
    base.update(kw)
    return ReviewPage(**base)


def test_a_page_is_stored_tile_by_tile_and_reads_back_exactly(tmp_path):
    with InteractionStore.open(tmp_path) as store:
        assert store.record_page(_page(), curator="ana") == 3
        rows = store.rows()
    assert [tuple(r) for r in rows] == [ROW_COLUMNS] * 3
    odd = rows[1]
    assert (odd["item_id"], odd["row"], odd["col"], odd["order"], odd["point_index"]) == ("item001", 0, 1, 1, 41)
    assert odd["curator"] == "ana" and odd["decision"] == "not" and odd["event_id"] == 7
    assert odd["hovers"] == [[101.0, 181.0], [300.0, None]] and odd["hover_count"] == 2 and odd["hover_ms"] == 80.0
    assert odd["clicks"] == [{"t": 150.0, "x": 12.5, "y": 30.0}] and odd["click_count"] == 1
    assert odd["time_to_decision_ms"] == 150.0 - 11.0
    assert rows[0]["decision"] == "match" and rows[0]["clicks"] == [] and rows[0]["time_to_decision_ms"] == 890.0


def test_pages_survive_reopening_and_filter_by_curator(tmp_path):
    with InteractionStore.open(tmp_path) as store:
        store.record_page(_page("a1"), curator="ana")
        store.record_page(_page("b1", n=2), curator="ben")
    with InteractionStore.open(tmp_path) as store:
        assert store.count() == (2, 5)
        assert {r["page_id"] for r in store.rows(curator="ben")} == {"b1"}
        assert [p["page_id"] for p in store.pages(curator="ana")] == ["a1"]
        assert len(store.rows(page_ids=["a1", "b1"])) == 5


def test_a_page_id_is_written_once(tmp_path):
    with InteractionStore.open(tmp_path) as store:
        store.record_page(_page(), curator="ana")
        with pytest.raises(DuplicatePage):
            store.record_page(_page(), curator="ben")
        assert store.count() == (1, 3)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(page_id="../x"), "page_id"),
        (dict(label=""), "label"),
        (dict(tiles=()), "tiles"),
        (dict(submitted_at=1.0), "submitted_at"),
        (dict(event_id=-1), "event_id"),
    ],
)
def test_bad_pages_are_refused_and_nothing_is_written(tmp_path, change, field):
    with InteractionStore.open(tmp_path) as store:
        with pytest.raises(InteractionError, match=field):
            store.record_page(_page(**change), curator="ana")
        assert store.count() == (0, 0)


@pytest.mark.parametrize(
    "tile_change, field",
    [
        (dict(decision="maybe"), "decision"),
        (dict(item_id="bad id"), "item_id"),
        (dict(row=-1), "row"),
        (dict(hovers=((5.0, 2.0),)), "leave"),
        (dict(hovers=((math.nan, None),)), "enter"),
        (dict(clicks=((1.0, math.inf, 2.0),)), "x"),
        (dict(clicks=((1.0, 2.0),)), "clicks"),
        (dict(shown_ms=LIMITS["ms"] + 1), "shown_ms"),
        (dict(hovers=tuple((1.0, 2.0) for _ in range(LIMITS["hovers"] + 1))), "hovers"),
        (dict(clicks=tuple((1.0, 2.0, 3.0) for _ in range(LIMITS["clicks"] + 1))), "clicks"),
    ],
)
def test_bad_tiles_are_refused_with_their_field_named(tmp_path, tile_change, field):
    good = _page()
    bad_tile = ReviewTile(**{**good.tiles[0].__dict__, **tile_change})
    with InteractionStore.open(tmp_path) as store:
        with pytest.raises(InteractionError, match=field):
            store.record_page(_page(tiles=(bad_tile, *good.tiles[1:])), curator="ana")
        assert store.count() == (0, 0)


def test_caps_on_tiles_and_unique_places(tmp_path):
    one = _page().tiles[0]
    with InteractionStore.open(tmp_path) as store:
        with pytest.raises(InteractionError, match="at most"):
            store.record_page(_page(tiles=tuple(ReviewTile(**{**one.__dict__, "order": k}) for k in range(LIMITS["tiles"] + 1))), curator="ana")
        with pytest.raises(InteractionError, match="order"):
            store.record_page(_page(tiles=(one, one)), curator="ana")
        assert store.count() == (0, 0)


def test_a_file_that_is_not_a_store_is_an_error(tmp_path):
    (tmp_path / "interactions.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InteractionError, match="not a Corral interactions file"):
        InteractionStore.open(tmp_path)


def _writer(root: str, k: int) -> None:
    with InteractionStore.open(root) as store:
        for j in range(5):
            store.record_page(_page(f"w{k}-{j}", n=4), curator=f"c{k}")


def test_writers_in_several_processes_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with InteractionStore.open(tmp_path) as store:
        assert store.count() == (15, 60)
    # plain sqlite3 reads it too (the journal is WAL; the file is the whole record)
    with sqlite3.connect(tmp_path / "interactions.sqlite") as c:
        assert c.execute("SELECT COUNT(DISTINCT curator) FROM pages").fetchone()[0] == 3


def test_passes_are_kept_per_map_newest_first_and_bad_ones_refused(tmp_path):
    from corral.storage.interactions import PASSES_READ

    with InteractionStore.open(tmp_path) as store:
        a = store.record_pass("main", ["item001", "item002", "item001"], curator="ana", how="skip", kind="group", labels_version=4)
        b = store.record_pass("main", ["item009"], curator="ben", how="replaced", kind="cluster")
        store.record_pass("other", ["item003"], curator="ana", how="skip", kind="cluster")
        assert b > a
        assert store.passes("main") == [["item009"], ["item001", "item002"]]  # newest first, each item once
        assert store.passes("main", limit=1) == [["item009"]] and store.passes("none") == []
        for bad, msg in (
            (dict(how="maybe"), "how"),
            (dict(kind="suggested"), "kind"),
            (dict(items=[]), "at least one item"),
            (dict(items=["has space"]), "not an item id"),
            (dict(items=[f"i{k}" for k in range(LIMITS["pass_items"] + 1)]), "at most"),
            (dict(curator=""), "curator"),
            (dict(labels_version=-1), "labels_version"),
        ):
            kw = dict(items=["item001"], curator="ana", how="skip", kind="group") | bad
            with pytest.raises(InteractionError, match=msg):
                store.record_pass("main", kw.pop("items"), **kw)
    with InteractionStore.open(tmp_path) as store:  # survives reopening, nothing of the bad ones written
        rows = store.pass_rows()
        assert [(r["map"], r["curator"], r["how"], r["kind"], r["item_count"]) for r in rows] == [
            ("main", "ana", "skip", "group", 2), ("main", "ben", "replaced", "cluster", 1), ("other", "ana", "skip", "cluster", 1)
        ]
        assert rows[0]["labels_version"] == 4 and rows[1]["labels_version"] is None and all(r["at"] > 1.7e9 for r in rows)
        assert [r["pass_id"] for r in store.pass_rows(curator="ben")] == [b]
        assert PASSES_READ >= 100
        assert store.last_pass("main") == b and store.last_pass("none") == 0


def test_a_tile_a_cut_left_out_is_stored_as_left():
    import tempfile

    with tempfile.TemporaryDirectory() as d, InteractionStore.open(d) as store:
        tiles = tuple(ReviewTile(item_id=f"item{k}", row=0, col=k, order=k, decision=("left", "not", "match")[k], decided_ms=100.0 * k) for k in range(3))
        store.record_page(_page("cut", tiles=tiles), curator="ana")
        assert [r["decision"] for r in store.rows()] == ["left", "not", "match"]
