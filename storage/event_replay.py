"""Undo, redo and replay of the label store's recorded changes.

Undo and redo are events too. They invert (or re-apply) the target's recorded changes one by one,
each only where the current state still equals what the target left behind, so undoing your own
action is exact, and undoing it after someone else changed the same item leaves their work alone
(the skipped changes are counted as ``conflicts``). :func:`replay` rebuilds the whole state from
the change rows alone; :func:`check` compares it with the materialised state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.storage.events import Conn, LabelRow, Txn, load_labels, name_key


def invert(tx: Txn, target: int, *, redo: bool) -> int:
    """Undo (or redo) event ``target`` inside ``tx``; returns how many items it touched.

    The order matters so that no step sees two active labels with one name: aliases are dropped
    first, labels come back, names change, items and exclusions move, emptied labels go, and
    aliases are added last.
    """
    c = tx.conn
    moves: list[tuple[LabelRow, dict[str, Any], dict[str, Any]]] = []
    for lid, before_s, after_s in c.execute("SELECT label_id, before, after FROM label_changes WHERE event_id = ?", (target,)).fetchall():
        after = json.loads(after_s)
        before = json.loads(before_s) if before_s else {"name": after["name"], "aliases": [], "active": False}
        expect, goal = (before, after) if redo else (after, before)
        moves.append((tx.labels[lid], expect, goal))
    keys = lambda names: {name_key(a) for a in names}  # noqa: E731
    for row, expect, goal in moves:  # 1. aliases that go
        drop = keys(expect["aliases"]) - keys(goal["aliases"])
        if drop & keys(row.aliases):
            tx.update_label(row, aliases=[a for a in row.aliases if name_key(a) not in drop])
    for row, expect, goal in moves:  # 2. labels that come back
        if goal["active"] and not row.active and not expect["active"]:
            if any(tx.owner_of(k, besides=row.id) for k in {name_key(goal["name"]), name_key(row.name)}):
                tx.conflicts += 1  # the name was taken while this label was gone
            else:
                tx.update_label(row, active=True)
    for row, expect, goal in moves:  # 3. names
        if row.name == expect["name"] and goal["name"] != row.name:
            if row.active and tx.owner_of(name_key(goal["name"]), besides=row.id):
                tx.conflicts += 1
            else:
                tx.update_label(row, name=goal["name"])
    item_rows = c.execute("SELECT item_id, before_label, before_event, after_label, after_event FROM item_changes WHERE event_id = ?", (target,)).fetchall()
    tx.states([r[0] for r in item_rows])
    for item_id, bl, be, al, ae in item_rows:  # 4. items
        before = None if bl is None else (bl, be)
        after = None if al is None else (al, ae)
        expect_i, goal_i = (before, after) if redo else (after, before)
        if tx.state(item_id) != expect_i or (goal_i is not None and not tx.labels[goal_i[0]].active):
            tx.conflicts += 1
            continue
        tx.set_item(item_id, goal_i)
    ex_rows = c.execute("SELECT item_id, label_id, added FROM excl_changes WHERE event_id = ?", (target,)).fetchall()
    for lid in {r[1] for r in ex_rows}:
        tx.excluded([r[0] for r in ex_rows if r[1] == lid], lid)
    for item_id, lid, added in ex_rows:  # 5. exclusions
        want = bool(added) if redo else not added
        if want and not tx.labels[lid].active:
            tx.conflicts += 1
            continue
        if tx.excluded([item_id], lid)[item_id] != want:
            tx.set_excluded(item_id, lid, want)
    for row, expect, goal in moves:  # 6. labels that go
        if not goal["active"] and row.active and expect["active"]:
            if row.count > 0:
                tx.conflicts += 1  # someone put items on it since; keep it
            else:
                tx.update_label(row, active=False)
    for row, expect, goal in moves:  # 7. aliases that come
        add = [a for a in goal["aliases"] if name_key(a) not in keys(expect["aliases"])]
        if name_key(goal["name"]) != name_key(row.name):
            add.append(goal["name"])  # a name we could not restore still finds the label
        add = [a for a in add if name_key(a) not in row.keys()]
        ok = [a for a in add if not (row.active and tx.owner_of(name_key(a), besides=row.id))]
        tx.conflicts += len(add) - len(ok)
        if ok:
            tx.update_label(row, aliases=[*row.aliases, *ok])
    return len({r[0] for r in item_rows} | {r[0] for r in ex_rows})


def last_action(conn: Conn, user: str, *, redo: bool) -> int | None:
    """The event a user's next undo (or redo) would act on."""
    if not redo:
        row = conn.execute('SELECT MAX(event_id) FROM actions WHERE "user" = ? AND undone = 0', (user,)).fetchone()
        return row[0]
    newest = conn.execute('SELECT COALESCE(MAX(event_id), 0) FROM actions WHERE "user" = ?', (user,)).fetchone()[0]
    # a new action since the undo clears the redo stack; the most recently undone comes back first
    row = conn.execute(
        'SELECT event_id FROM actions WHERE "user" = ? AND undone = 1 AND toggled_by > ? ORDER BY toggled_by DESC LIMIT 1',
        (user, newest),
    ).fetchone()
    return row[0] if row else None


# ------------------------------------------------------------------------------------------
# Replay and consistency


@dataclass
class State:
    items: dict[str, tuple[int, int]]
    exclusions: set[tuple[str, int]]
    labels: dict[int, dict[str, Any]]  # id -> {name, aliases, active, count}


def replay(conn: Conn) -> State:
    """The state rebuilt from the events' change rows alone, in event order."""
    items: dict[str, tuple[int, int]] = {}
    excl: set[tuple[str, int]] = set()
    labels: dict[int, dict[str, Any]] = {}
    ev_ids = [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")]
    lc = _group(conn.execute("SELECT event_id, label_id, after FROM label_changes ORDER BY rowid"))
    ic = _group(conn.execute("SELECT event_id, item_id, after_label, after_event FROM item_changes ORDER BY rowid"))
    ec = _group(conn.execute("SELECT event_id, item_id, label_id, added FROM excl_changes ORDER BY rowid"))
    for eid in ev_ids:
        for lid, after in lc.get(eid, ()):
            labels[lid] = json.loads(after)
        for item_id, al, ae in ic.get(eid, ()):
            if al is None:
                items.pop(item_id, None)
            else:
                items[item_id] = (al, ae)
        for item_id, lid, added in ec.get(eid, ()):
            (excl.add if added else excl.discard)((item_id, lid))
    counts = Counter(lid for lid, _ in items.values())
    for lid, lab in labels.items():
        lab["count"] = counts.get(lid, 0)
    return State(items, excl, labels)


def _group(rows: Iterable[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1:])
    return out


def materialised(conn: Conn) -> State:
    items = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT item_id, label_id, event_id FROM item_state")}
    excl = {(r[0], r[1]) for r in conn.execute("SELECT item_id, label_id FROM exclusions")}
    labels = {row.id: {**row.snapshot(), "count": row.count} for row in load_labels(conn).values()}
    return State(items, excl, labels)


def check(conn: Conn) -> list[str]:
    """Differences between the materialised state and a replay of the events (empty = consistent).
    Call it inside one read transaction, so both sides see the same version."""
    a, b = materialised(conn), replay(conn)
    problems = []
    pairs: tuple[tuple[str, Mapping[Any, Any], Mapping[Any, Any]], ...] = (("item labels", a.items, b.items), ("labels", a.labels, b.labels))
    for what, x, y in pairs:
        for k in sorted(set(x) | set(y), key=str):
            if x.get(k) != y.get(k):
                problems.append(f"{what}: {k!r} is {x.get(k)!r} in the store but {y.get(k)!r} in the replay")
    for k in sorted(a.exclusions ^ b.exclusions):
        problems.append(f"exclusion {k!r} differs between the store and the replay")
    return problems
