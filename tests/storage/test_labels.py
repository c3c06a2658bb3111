"""The label store: actions, label objects, exact undo/redo, bad input, stats, the workspace."""

from __future__ import annotations

import random

import pytest

from corral.storage.labels import LabelError, LabelStore
from tests.generated import generated_data
from tests.storage.factory import IDS, build_workspace, pick_images


def full_state(s: LabelStore) -> tuple:
    """Everything a user could observe: item labels with who/when, exclusions, label objects."""
    snap = s.snapshot()
    labels = sorted((li.id, li.name, tuple(li.aliases), li.count, li.created_by, li.created_at) for li in snap.labels)
    return snap.items, snap.exclusions, labels


def test_assign_names_a_selection_and_remembers_exclusions(store):
    res = store.assign(IDS[:5], "Mug", user="ana", exclude=[IDS[4]], duration_ms=4200)
    assert res.kind == "assign" and res.version == res.event_id == store.version() == 1
    assert res.changed == {IDS[0]: "Mug", IDS[1]: "Mug", IDS[2]: "Mug", IDS[3]: "Mug", IDS[4]: None}
    assert [(li.name, li.count, li.created_by) for li in res.labels] == [("Mug", 4, "ana")]
    assert store.exclusions() == {IDS[4]: {"Mug"}}
    # names match case-insensitively: "mug" is the same label, and naming an excluded item clears the exclusion
    res = store.assign([IDS[4]], "  mug ", user="bob")
    assert res.labels[0].name == "Mug" and res.labels[0].count == 5
    assert store.exclusions() == {}
    # excluding an item that carries another label keeps that label
    store.assign([IDS[10]], "Bowl", user="ana")
    store.assign([IDS[11]], "mug", user="ana", exclude=[IDS[10]])
    assert store.item_labels()[IDS[10]] == "Bowl"
    assert store.exclusions() == {IDS[10]: {"Mug"}}
    ev = store.events()[0]
    assert (ev.user, ev.kind, ev.item_count, ev.duration_ms) == ("ana", "assign", 5, 4200)
    assert ev.payload["items"] == IDS[:4] and ev.payload["exclude"] == [IDS[4]] and ev.payload["created"] is True
    assert store.check() == []


def test_exclude_unlabel_and_labelled_by(store):
    store.assign(IDS[:3], "cat", user="ana")
    store.exclude(IDS[:2], "CAT", user="bob")
    assert store.item_labels() == {IDS[2]: "cat"}
    assert store.exclusions() == {IDS[0]: {"cat"}, IDS[1]: {"cat"}}
    store.unlabel([IDS[2]], user="bob")
    assert store.item_labels() == {}
    assert store.exclusions() == {IDS[0]: {"cat"}, IDS[1]: {"cat"}}  # unlabel keeps what was excluded
    store.assign([IDS[5]], "dog", user="cy")
    snap = store.snapshot()
    label, by, at = snap.items[IDS[5]]
    assert (label, by) == ("dog", "cy") and at == store.events()[-1].at


def test_rename_keeps_the_old_name_as_alias(store):
    store.assign(IDS[:3], "kitty", user="ana")
    store.assign(IDS[3:4], "dog", user="ana")
    res = store.rename_label("Kitty", "cat", user="ana")
    assert set(res.changed) == set(IDS[:3]) and set(res.changed.values()) == {"cat"}
    info = {li.name: li for li in store.labels()}
    assert info["cat"].aliases == ["kitty"] and info["cat"].count == 3
    store.assign([IDS[5]], "KITTY", user="bob")  # the alias still finds the label
    assert store.item_labels()[IDS[5]] == "cat"
    with pytest.raises(LabelError, match="already uses that name"):
        store.rename_label("cat", "DOG", user="ana")
    with pytest.raises(LabelError, match="already uses that name"):
        store.rename_label("dog", "kitty", user="ana")  # an alias is taken too
    store.rename_label("cat", "Cat", user="ana")  # a change of case is a rename
    assert {li.name: li.aliases for li in store.labels()}["Cat"] == ["kitty"]
    assert store.check() == []


def test_merge_moves_items_aliases_and_exclusions(store):
    store.assign(IDS[:3], "kitten", user="ana", exclude=[IDS[9]])
    store.assign(IDS[3:5], "cat", user="bob")
    store.assign(IDS[5:6], "tabby", user="bob")
    res = store.merge_labels(["kitten", "Tabby", "cat"], "cat", user="ana")
    assert set(res.changed) == set(IDS[:3]) | {IDS[5]}
    assert [(li.name, li.count, sorted(li.aliases)) for li in store.labels()] == [("cat", 6, ["kitten", "tabby"])]
    assert store.exclusions() == {IDS[9]: {"cat"}}
    assert store.item_labels() == {i: "cat" for i in IDS[:6]}
    # merging into a new name creates it
    store.assign(IDS[10:12], "dog", user="ana")
    store.merge_labels(["dog", "cat"], "animal", user="ana")
    assert [(li.name, li.count) for li in store.labels()] == [("animal", 8)]
    with pytest.raises(LabelError, match="nothing to merge"):
        store.merge_labels(["animal"], "Animal", user="ana")
    assert store.check() == []


def test_delete_unlabels_and_undo_brings_everything_back(store):
    store.assign(IDS[:4], "cup", user="ana", exclude=[IDS[4]])
    before = full_state(store)
    res = store.delete_label("CUP", user="bob")
    assert res.changed == {i: None for i in IDS[:4]}
    assert store.labels() == [] and store.item_labels() == {} and store.exclusions() == {}
    store.assign([IDS[7]], "cup", user="cy")  # the name is free again: a new label
    store.unlabel([IDS[7]], user="cy")
    store.delete_label("cup", user="cy")
    store.undo(user="bob")
    assert full_state(store) == before
    assert store.check() == []


def _random_action(store: LabelStore, rng: random.Random, user: str) -> bool:
    names = [li.name for li in store.labels()]
    pick = lambda k: rng.sample(IDS, k)  # noqa: E731
    op = rng.choice(["assign", "assign", "assign", "exclude", "unlabel", "rename", "merge", "delete", "import"])
    try:
        if op == "assign":
            store.assign(pick(rng.randint(1, 8)), rng.choice(["cat", "Dog", "bird", "fish", "cow", "CAT"]), user=user, exclude=pick(rng.randint(0, 2)), duration_ms=rng.randint(100, 9000))
        elif op == "exclude" and names:
            store.exclude(pick(rng.randint(1, 5)), rng.choice(names), user=user)
        elif op == "unlabel":
            store.unlabel(pick(rng.randint(1, 5)), user=user)
        elif op == "rename" and names:
            store.rename_label(rng.choice(names), rng.choice(["feline", "hound", "avian", "x" + str(rng.randint(0, 99))]), user=user)
        elif op == "merge" and len(names) >= 2:
            a, b = rng.sample(names, 2)
            store.merge_labels([a], b, user=user)
        elif op == "delete" and names:
            store.delete_label(rng.choice(names), user=user)
        elif op == "import":
            store.import_labels({i: rng.choice(["cat", "heron"]) for i in pick(6)}, user=user, source="test", overwrite=rng.random() < 0.5)
        else:
            return False
    except LabelError:
        return False  # e.g. a rename onto a taken name: refused, nothing written
    return True


@pytest.mark.parametrize("seed", range(4))
def test_undo_and_redo_are_exact(store, seed):
    rng = random.Random(seed)
    states = [full_state(store)]
    while len(states) < 41:
        version = store.version()
        if _random_action(store, rng, "ana"):
            states.append(full_state(store))
        else:
            assert store.version() == version
    for expected in reversed(states[:-1]):
        res = store.undo(user="ana")
        assert res.conflicts == 0
        assert full_state(store) == expected
    with pytest.raises(LabelError, match="nothing to undo"):
        store.undo(user="ana")
    for expected in states[1:]:
        store.redo(user="ana")
        assert full_state(store) == expected
    with pytest.raises(LabelError, match="nothing to redo"):
        store.redo(user="ana")
    assert store.check() == []


def test_undo_is_per_user_and_leaves_others_work_alone(store):
    store.assign(IDS[:4], "cat", user="ana")
    store.assign(IDS[2:6], "dog", user="bob")
    res = store.undo(user="ana")  # items 2 and 3 are bob's now: left alone
    assert res.conflicts == 2
    assert store.item_labels() == {IDS[2]: "dog", IDS[3]: "dog", IDS[4]: "dog", IDS[5]: "dog"}
    assert [li.name for li in store.labels()] == ["dog"]  # "cat" lost its last item and goes with the undo
    store.redo(user="ana")
    assert store.item_labels() == {IDS[0]: "cat", IDS[1]: "cat", IDS[2]: "dog", IDS[3]: "dog", IDS[4]: "dog", IDS[5]: "dog"}
    store.undo(user="bob")  # items 2 and 3 go back to what bob found: ana's "cat"
    assert store.item_labels() == {i: "cat" for i in IDS[:4]}
    assert store.check() == []


def test_a_new_action_clears_the_redo_stack(store):
    store.assign(IDS[:2], "cat", user="ana")
    store.assign(IDS[2:4], "dog", user="ana")
    store.undo(user="ana")
    store.assign(IDS[5:6], "cow", user="bob")  # someone else acting does not matter
    store.redo(user="ana")
    store.undo(user="ana")
    store.assign(IDS[6:7], "hen", user="ana")
    with pytest.raises(LabelError, match="nothing to redo"):
        store.redo(user="ana")
    kinds = [e.kind for e in store.events()]
    assert kinds == ["assign", "assign", "undo", "assign", "redo", "undo", "assign"]


BAD = [
    ("unknown item", lambda s: s.assign(["nope", "item-000"], "cat", user="u"), "unknown item id"),
    ("empty name", lambda s: s.assign(["item-000"], "", user="u"), "empty"),
    ("blank name", lambda s: s.assign(["item-000"], " \t ", user="u"), "empty"),
    ("10,000 characters", lambda s: s.assign(["item-000"], "x" * 10_000, user="u"), "10,000 characters"),
    ("control character", lambda s: s.assign(["item-000"], "cat\x00", user="u"), "U\\+0000"),
    ("newline", lambda s: s.assign(["item-000"], "cat\ndog", user="u"), "U\\+000A"),
    ("bidi override", lambda s: s.assign(["item-000"], "cat\u202egod", user="u"), "U\\+202E"),
    ("name not text", lambda s: s.assign(["item-000"], 7, user="u"), "must be text"),
    ("ids as a string", lambda s: s.assign("item-000", "cat", user="u"), "list of item ids"),
    ("no items", lambda s: s.assign([], "cat", user="u"), "empty"),
    ("unknown excluded item", lambda s: s.assign(["item-000"], "cat", user="u", exclude=["zzz"]), "unknown item id"),
    ("missing label", lambda s: s.exclude(["item-000"], "giraffe", user="u"), "does not exist"),
    ("rename missing", lambda s: s.rename_label("giraffe", "x", user="u"), "does not exist"),
    ("merge missing", lambda s: s.merge_labels(["giraffe"], "cat", user="u"), "does not exist"),
    ("merge a string", lambda s: s.merge_labels("cat", "dog", user="u"), "list of label names"),
    ("delete missing", lambda s: s.delete_label("giraffe", user="u"), "does not exist"),
    ("negative duration", lambda s: s.assign(["item-000"], "cat", user="u", duration_ms=-5), "duration_ms"),
    ("bool duration", lambda s: s.assign(["item-000"], "cat", user="u", duration_ms=True), "duration_ms"),
    ("empty user", lambda s: s.assign(["item-000"], "cat", user=""), "user is empty"),
    ("undo nothing", lambda s: s.undo(user="nobody"), "nothing to undo"),
    ("import unknown", lambda s: s.import_labels({"zzz": "cat"}, user="u"), "unknown item id"),
    ("import bad name", lambda s: s.import_labels({"item-001": "ok", "item-002": "\x07"}, user="u"), "U\\+0007"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_and_writes_nothing(store, case):
    _, call, message = case
    store.assign(IDS[:3], "cat", user="u")
    before, version = full_state(store), store.version()
    with pytest.raises(LabelError, match=message):
        call(store)
    assert store.version() == version and full_state(store) == before
    assert store.check() == []


def test_events_pages_and_curator_stats(store):
    store.assign(IDS[:10], "cat", user="ana", duration_ms=3000)
    store.assign(IDS[10:12], "dog", user="ana", duration_ms=1000)
    store.exclude(IDS[:2], "cat", user="bob")
    store.undo(user="ana")
    assert [e.id for e in store.events(since=1, limit=2)] == [2, 3]
    assert [e.kind for e in store.events(user="ana")] == ["assign", "assign", "undo"]
    assert store.event_items(2) == {IDS[10]: "dog", IDS[11]: "dog"}
    with pytest.raises(LabelError, match="limit"):
        store.events(limit=0)
    stats = {s["user"]: s for s in store.curator_stats()}
    assert stats["ana"]["actions"] == 2 and stats["ana"]["undos"] == 1 and stats["ana"]["items"] == 12
    assert stats["ana"]["items_per_action"] == 6.0 and stats["ana"]["seconds_per_action"] == 2.0
    assert stats["ana"]["actions_per_hour"] == 1800.0
    assert stats["bob"]["timed_actions"] == 0 and stats["bob"]["actions_per_hour"] is None


def test_store_survives_reopen_and_backup_is_a_store(store, tmp_path):
    store.assign(IDS[:3], "cat", user="ana")
    store.rename_label("cat", "feline", user="ana")
    state = full_state(store)
    copy = store.backup(tmp_path / "copy" / "labels.sqlite")
    store.close()
    with pytest.raises(LabelError, match="closed"):
        store.version()
    for where in (store.location.target, copy):
        with LabelStore(where) as again:
            assert full_state(again) == state and again.check() == []
            assert again.undo(user="ana").kind == "undo"  # the undo stack is part of the store


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    bad = tmp_path / "labels.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LabelError, match="not a Corral label store"):
        LabelStore(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_check_finds_a_state_that_disagrees_with_the_events(store):
    store.assign(IDS[:3], "cat", user="ana")
    with store._write() as c:  # damage the derived state behind the engine's back
        c.execute("DELETE FROM item_state WHERE item_id = ?", (IDS[0],))
    problems = store.check()
    assert len(problems) >= 1 and IDS[0] in problems[0]


def test_open_registers_the_workspace_items(tmp_path):
    images = pick_images(generated_data("images"), classes=2, per_class=5)
    ws = build_workspace(tmp_path / "ws", images)
    ids = ws.items().column("id").to_pylist()
    with LabelStore.open(ws) as s:
        assert s.known_ids() == set(ids)
        s.assign(ids[:3], "duck", user="ana")
    with LabelStore.open(tmp_path / "ws") as s:  # a path works too; nothing is registered twice
        assert s.known_items() == 10 and s.item_labels() == {i: "duck" for i in ids[:3]}
        with pytest.raises(LabelError, match="unknown item"):
            s.assign(["0" * 32], "duck", user="ana")


def test_threads_of_a_server_share_a_few_postgresql_connections(pg_server):
    """An API server runs its routes on dozens of threads: they share one connection for single
    statements and a small pool for transactions, so three servers fit a default PostgreSQL."""
    import threading

    from corral.storage.labels_pg import POOL

    url = pg_server.new_database()
    with LabelStore(url) as s:
        s.register_items(IDS)
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for j in range(4):
                    s.assign([IDS[(k + j) % len(IDS)]], f"L{k % 3}", user=f"u{k}")
                    s.labels()
                s.undo(user=f"u{k}")
            except BaseException as e:  # surfaced below
                errors.append(e)

        pool = [threading.Thread(target=work, args=(k,)) for k in range(30)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert not errors, errors[:3]
        held = s._conn().execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()").fetchone()[0]
        assert 1 < held <= POOL + 1
        assert s.version() == 30 * 5 and s.check() == []
        assert sum(st["actions"] for st in s.curator_stats()) == 30 * 4
    pg_server.drop_database(url)
