"""Copy a whole label store, history included, between backends (``corral labels migrate``).

The copy is row for row: the same item ids, events (ids, users, times, payloads), label objects,
state and per-event changes, read from one version of the source in one read transaction and
written to the target in one write transaction, so the target is never seen half-filled. Change
rows keep their order, so undo and replay act on the target exactly as on the source.
:func:`compare` then checks both sides: each one's state equals a replay of its own events, and the
two replays are equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.storage import event_replay
from corral.storage.events import LabelError

if TYPE_CHECKING:
    from corral.storage.labels import LabelStore

logger = logging.getLogger(__name__)

#: table -> its columns, in the order rows are copied (change tables in write order)
TABLES: dict[str, tuple[str, ...]] = {
    "items": ("id",),
    "events": ("id", '"user"', "at", "kind", "payload", "item_count", "duration_ms"),
    "labels": ("id", "name", "aliases", "active", "created_by", "created_at", "n_items"),
    "item_state": ("item_id", "label_id", "event_id"),
    "exclusions": ("item_id", "label_id"),
    "actions": ("event_id", '"user"', "undone", "toggled_by"),
    "item_changes": ("event_id", "item_id", "before_label", "before_event", "after_label", "after_event"),
    "excl_changes": ("event_id", "item_id", "label_id", "added"),
    "label_changes": ("event_id", "label_id", "before", "after"),
}
_ORDER = {"item_changes": "rowid", "excl_changes": "rowid", "label_changes": "rowid", "events": "id", "labels": "id", "actions": "event_id"}
_BATCH = 5000


@dataclass(frozen=True)
class CopyResult:
    rows: dict[str, int]  # table -> rows copied
    version: int  # the store version copied


def is_empty(store: "LabelStore") -> bool:
    """True when the store holds no items, events or labels."""
    c = store._conn()
    return all(c.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is None for t in ("items", "events", "labels"))


def copy_store(src: "LabelStore", dst: "LabelStore", *, replace: bool = False) -> CopyResult:
    """Copy everything in ``src`` into ``dst``. A ``dst`` that holds anything is refused unless
    ``replace``, which empties it first (in the same transaction as the copy)."""
    if not replace and not is_empty(dst):
        raise LabelError(f"the target store {dst.location} is not empty; pick an empty one, or empty it on purpose (corral labels migrate --replace)")
    counts: dict[str, int] = {}
    with src._read() as r, dst._write() as w:
        version = int(r.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
        if replace:
            for table in TABLES:
                w.execute(f"DELETE FROM {table}")
        for table, cols in TABLES.items():
            order = f" ORDER BY {_ORDER[table]}" if table in _ORDER else ""
            cur = r.execute(f"SELECT {', '.join(cols)} FROM {table}{order}")
            insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            n = 0
            while rows := cur.fetchmany(_BATCH):
                w.executemany(insert, [tuple(row) for row in rows])
                n += len(rows)
            counts[table] = n
        meta = [tuple(row) for row in r.execute("SELECT key, value FROM meta WHERE key <> 'schema_version'").fetchall()]
        w.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", meta)
    logger.info("copied label store %s -> %s at version %d: %s", src.location, dst.location, version, counts)
    return CopyResult(counts, version)


def compare(a: "LabelStore", b: "LabelStore") -> list[str]:
    """Differences that make ``b`` not a faithful copy of ``a`` (empty = equal): each side's own
    replay check, then the two replays, event logs and known ids against each other."""
    problems = [f"{a.location}: {p}" for p in a.check()] + [f"{b.location}: {p}" for p in b.check()]
    with a._read() as ca, b._read() as cb:
        ra, rb = event_replay.replay(ca), event_replay.replay(cb)
        for what, x, y in (("item labels", ra.items, rb.items), ("labels", ra.labels, rb.labels)):
            if x != y:
                diff = sorted(set(x) ^ set(y) | {k for k in set(x) & set(y) if x[k] != y[k]}, key=str)
                problems.append(f"replayed {what} differ for {len(diff)} keys, e.g. {diff[:3]!r}")
        if ra.exclusions != rb.exclusions:
            problems.append(f"replayed exclusions differ in {len(ra.exclusions ^ rb.exclusions)} pairs")
        for table, cols in TABLES.items():
            order = f" ORDER BY {_ORDER[table]}" if table in _ORDER else f" ORDER BY {cols[0]}" + (f", {cols[1]}" if len(cols) > 1 else "")
            q = f"SELECT {', '.join(cols)} FROM {table}{order}"
            if _rows(ca, q) != _rows(cb, q):
                problems.append(f"table {table} differs between {a.location} and {b.location}")
    return problems


def _rows(conn: Any, q: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(q).fetchall()]
