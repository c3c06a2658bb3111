"""The event engine under :class:`corral.storage.labels.LabelStore`.

Every curator action is one row in ``events`` plus the exact changes it made, in three change
tables (items, exclusions, label objects). The current state (``item_state``, ``exclusions``,
``labels``) is a materialised view of those changes, updated in the same transaction; :func:`replay`
(in :mod:`corral.storage.event_replay`) rebuilds it from the change tables alone and ``check`` compares
the two, so "derived from the events" is something a test can verify rather than a promise.

Undo and redo, and the replay, are in :mod:`corral.storage.event_replay`.

The SQL is plain (``?`` parameters, ``ON CONFLICT`` upserts, ``"user"`` quoted, no SQLite-only
statements outside :func:`connect` and :func:`create_schema`), so PostgreSQL sits behind the same
:class:`Txn` (:mod:`corral.storage.labels_pg` hands it a connection that takes ``?``). The change
tables are read back in write order through ``rowid``: SQLite's implicit one, and a column of that
name in PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.storage.label_names import name_key

SCHEMA_VERSION = 1

#: Kinds of revisions of things other than labels (a detector's boxes), recorded by
#: ``LabelStore.revise``: what changed lives in the event's payload, any label moves in the usual
#: change rows, and whether the revision holds is the event's undone flag, so any backend that keeps
#: events, payloads and the undo stack keeps these too.
REVISION_KINDS = ("boxes",)

#: Kinds of events a user can undo (undo and redo themselves are not on the stack).
ACTION_KINDS = ("assign", "exclude", "unlabel", "rename", "merge", "delete", "import", *REVISION_KINDS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    duration_ms INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user, id);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    aliases TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    n_items INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS item_state (
    item_id TEXT PRIMARY KEY, label_id INTEGER NOT NULL, event_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_state_by_label ON item_state (label_id);
CREATE TABLE IF NOT EXISTS exclusions (
    item_id TEXT NOT NULL, label_id INTEGER NOT NULL, PRIMARY KEY (item_id, label_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exclusions_by_label ON exclusions (label_id);
CREATE TABLE IF NOT EXISTS actions (
    event_id INTEGER PRIMARY KEY, user TEXT NOT NULL, undone INTEGER NOT NULL, toggled_by INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_user ON actions (user, undone, event_id);
CREATE TABLE IF NOT EXISTS item_changes (
    event_id INTEGER NOT NULL, item_id TEXT NOT NULL,
    before_label INTEGER, before_event INTEGER, after_label INTEGER, after_event INTEGER
);
CREATE INDEX IF NOT EXISTS item_changes_by_event ON item_changes (event_id);
CREATE TABLE IF NOT EXISTS excl_changes (
    event_id INTEGER NOT NULL, item_id TEXT NOT NULL, label_id INTEGER NOT NULL, added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS excl_changes_by_event ON excl_changes (event_id);
CREATE TABLE IF NOT EXISTS label_changes (
    event_id INTEGER NOT NULL, label_id INTEGER NOT NULL, before TEXT, after TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS label_changes_by_event ON label_changes (event_id);
"""


class Conn(Protocol):
    """What the engine needs of a database connection: ``sqlite3.Connection``, or the PostgreSQL
    adapter in :mod:`corral.storage.labels_pg`. ``execute`` returns a cursor that iterates rows and
    has ``fetchone``/``fetchall``; parameters are ``?``."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


_CHUNK = 500  # ids per IN (...) query, well under every database's parameter limit


class LabelError(ValueError):
    """Bad input to the label store (unknown ids, bad names, missing labels); nothing was written."""


class LabelStoreUnavailable(ConnectionError):
    """The label store's database server cannot be reached (or refused us); ``str()`` is one line
    that names the server and what to check. Nothing was written."""


@dataclass(frozen=True)
class LabelInfo:
    id: int
    name: str
    aliases: list[str]
    count: int  # items that carry the label now
    created_by: str
    created_at: float  # Unix seconds, UTC


@dataclass(frozen=True)
class Event:
    id: int
    user: str
    at: float  # Unix seconds, UTC
    kind: str  # one of ACTION_KINDS, "undo" or "redo"
    payload: dict[str, Any]
    item_count: int
    duration_ms: int | None


@dataclass(frozen=True)
class ActionResult:
    event_id: int
    version: int  # the store's version after the action (== event_id)
    kind: str
    changed: dict[str, str | None]  # item id -> its label now (None = unlabelled)
    labels: list[LabelInfo]  # the active labels after the action
    conflicts: int = 0  # undo/redo only: changes left alone because someone changed them since
    warnings: list[str] = field(default_factory=list)  # accepted, but worth a look (a look-alike name)


@dataclass
class LabelRow:
    id: int
    name: str
    aliases: list[str]
    active: bool
    created_by: str
    created_at: float
    count: int

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": list(self.aliases), "active": self.active}

    def keys(self) -> set[str]:
        return {name_key(self.name), *(name_key(a) for a in self.aliases)}

    def info(self) -> LabelInfo:
        return LabelInfo(self.id, self.name, list(self.aliases), self.count, self.created_by, self.created_at)


# ------------------------------------------------------------------------------------------
# Connections


def connect(path: Path, *, synchronous: str = "FULL", timeout_s: float = 60.0) -> sqlite3.Connection:
    """An autocommit connection in WAL mode; callers open transactions explicitly."""
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on an autocommit SQLite connection: BEGIN IMMEDIATE (the write lock
    up front), COMMIT when the block ends, ROLLBACK when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema(conn: sqlite3.Connection) -> None:
    with immediate(conn):
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise LabelError(f"label store schema version {row[0]} is newer than this Corral understands ({SCHEMA_VERSION}); upgrade Corral")


def curator_stats(conn: Conn) -> list[dict[str, Any]]:
    """Per curator: actions, undos, items per action, time per action and actions per hour
    (over the time the curators reported spending, ``duration_ms``)."""
    kinds = ",".join("?" * len(ACTION_KINDS))
    q = (
        f"SELECT \"user\", SUM(CASE WHEN kind IN ({kinds}) THEN 1 ELSE 0 END), SUM(CASE WHEN kind = 'undo' THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN kind IN ({kinds}) THEN item_count ELSE 0 END), SUM(CASE WHEN kind IN ({kinds}) THEN duration_ms END), "
        f"SUM(CASE WHEN kind IN ({kinds}) AND duration_ms IS NOT NULL THEN 1 ELSE 0 END), MIN(at), MAX(at) "
        'FROM events GROUP BY "user" ORDER BY "user"'
    )
    out = []
    for user, n, undos, items, ms, timed, first, last in conn.execute(q, ACTION_KINDS * 4):
        n, ms, timed = int(n or 0), int(ms or 0), int(timed or 0)
        out.append(
            {
                "user": user,
                "actions": n,
                "undos": int(undos or 0),
                "items": int(items or 0),
                "items_per_action": round((items or 0) / n, 3) if n else 0.0,
                "timed_actions": timed,
                "seconds_spent": round(ms / 1000, 3),
                "seconds_per_action": round(ms / 1000 / timed, 3) if timed else None,
                "actions_per_hour": round(timed / (ms / 3_600_000), 1) if ms else None,
                "first_at": first,
                "last_at": last,
            }
        )
    return out


def chunks(seq: list[Any], n: int = _CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def load_labels(conn: Conn) -> dict[int, LabelRow]:
    rows = conn.execute("SELECT id, name, aliases, active, created_by, created_at, n_items FROM labels ORDER BY id")
    return {r[0]: LabelRow(r[0], r[1], json.loads(r[2]), bool(r[3]), r[4], r[5], r[6]) for r in rows}


# ------------------------------------------------------------------------------------------
# One write transaction


@dataclass
class Txn:
    """The changes of one event, collected in memory and written by :meth:`flush`.

    Reads go to the database (inside the caller's write transaction) and are cached, so every
    decision sees the state as this event has left it so far.
    """

    conn: Conn
    user: str
    at: float
    event_id: int = 0
    labels: dict[int, LabelRow] = field(default_factory=dict)
    _items: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    _item_before: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    _excl_before: dict[tuple[str, int], bool] = field(default_factory=dict)
    _excl: dict[tuple[str, int], bool] = field(default_factory=dict)
    _label_before: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    _counted: set[int] = field(default_factory=set)
    conflicts: int = 0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = load_labels(self.conn)
        row = self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()
        self.event_id = int(row[0])

    # -- items ------------------------------------------------------------------------------
    def unknown_items(self, ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(ids))
        known: set[str] = set()
        for part in chunks(ids):
            q = f"SELECT id FROM items WHERE id IN ({','.join('?' * len(part))})"
            known.update(r[0] for r in self.conn.execute(q, part))
        return [i for i in ids if i not in known]

    def states(self, ids: Iterable[str]) -> dict[str, tuple[int, int] | None]:
        """Current (label id, event id) of each item, None when unlabelled."""
        want = [i for i in dict.fromkeys(ids) if i not in self._items]
        for part in chunks(want):
            q = f"SELECT item_id, label_id, event_id FROM item_state WHERE item_id IN ({','.join('?' * len(part))})"
            found = {r[0]: (r[1], r[2]) for r in self.conn.execute(q, part)}
            for i in part:
                self._items[i] = found.get(i)
        return {i: self._items[i] for i in ids}

    def state(self, item_id: str) -> tuple[int, int] | None:
        """One item's (label id, event id), from the cache when possible."""
        if item_id not in self._items:
            self.states([item_id])
        return self._items[item_id]

    def items_of(self, label_id: int) -> list[str]:
        """Items that carry the label now (as this event has left them so far)."""
        db = [r[0] for r in self.conn.execute("SELECT item_id FROM item_state WHERE label_id = ?", (label_id,))]
        self.states(db)
        return sorted(i for i, s in self._items.items() if s is not None and s[0] == label_id)

    def set_item(self, item_id: str, new: tuple[int, int] | None) -> bool:
        cur = self.state(item_id)
        if cur == new:
            return False
        if item_id not in self._item_before:
            self._item_before[item_id] = cur
        if cur is not None:
            self.labels[cur[0]].count -= 1
            self._counted.add(cur[0])
        if new is not None:
            self.labels[new[0]].count += 1
            self._counted.add(new[0])
        self._items[item_id] = new
        return True

    def label_items(self, ids: Iterable[str], label_id: int | None) -> None:
        """Give ``ids`` the label (None: unlabel), stamped with this event."""
        ids = list(ids)
        self.states(ids)  # one query per chunk, not per item
        for i in ids:
            cur = self._items[i]
            if label_id is None:
                self.set_item(i, None)
            elif cur is None or cur[0] != label_id:
                self.set_item(i, (label_id, self.event_id))

    # -- exclusions -------------------------------------------------------------------------
    def excluded(self, ids: Iterable[str], label_id: int) -> dict[str, bool]:
        ids = list(dict.fromkeys(ids))
        want = [i for i in ids if (i, label_id) not in self._excl]
        for part in chunks(want):
            q = f"SELECT item_id FROM exclusions WHERE label_id = ? AND item_id IN ({','.join('?' * len(part))})"
            found = {r[0] for r in self.conn.execute(q, [label_id, *part])}
            for i in part:
                self._excl[(i, label_id)] = i in found
        return {i: self._excl[(i, label_id)] for i in ids}

    def excluded_of(self, label_id: int) -> list[str]:
        db = [r[0] for r in self.conn.execute("SELECT item_id FROM exclusions WHERE label_id = ?", (label_id,))]
        self.excluded(db, label_id)
        return sorted(i for (i, lid), v in self._excl.items() if lid == label_id and v)

    def set_excluded_many(self, ids: Iterable[str], label_id: int, value: bool) -> None:
        ids = list(ids)
        self.excluded(ids, label_id)
        for i in ids:
            self.set_excluded(i, label_id, value)

    def set_excluded(self, item_id: str, label_id: int, value: bool) -> bool:
        key = (item_id, label_id)
        cur = self._excl[key] if key in self._excl else self.excluded([item_id], label_id)[item_id]
        if cur == value:
            return False
        self._excl_before.setdefault((item_id, label_id), cur)
        self._excl[(item_id, label_id)] = value
        return True

    # -- labels -----------------------------------------------------------------------------
    def resolve(self, name: str) -> LabelRow | None:
        """The active label called ``name`` (case-insensitively), by name first, then by alias."""
        key = name_key(name)
        active = [row for row in self.labels.values() if row.active]
        for row in active:
            if name_key(row.name) == key:
                return row
        for row in active:
            if key in {name_key(a) for a in row.aliases}:
                return row
        return None

    def owner_of(self, key: str, *, besides: int | None = None) -> LabelRow | None:
        """The active label (other than ``besides``) that uses ``key`` as its name or an alias."""
        for row in self.labels.values():
            if row.active and row.id != besides and key in row.keys():
                return row
        return None

    def create_label(self, name: str) -> LabelRow:
        new_id = max(self.labels, default=0) + 1
        row = LabelRow(new_id, name, [], True, self.user, self.at, 0)
        self.labels[new_id] = row
        self._label_before[new_id] = None
        return row

    def update_label(self, row: LabelRow, *, name: str | None = None, aliases: list[str] | None = None, active: bool | None = None) -> None:
        if row.id not in self._label_before:
            self._label_before[row.id] = row.snapshot()
        if name is not None:
            row.name = name
        if aliases is not None:
            row.aliases = dedupe_aliases(aliases, row.name)
        if active is not None:
            row.active = active

    # -- writing ----------------------------------------------------------------------------
    def changed_items(self) -> dict[str, tuple[int, int] | None]:
        return {i: self._items[i] for i, before in self._item_before.items() if self._items[i] != before}

    def flush(self, *, kind: str, payload: dict[str, Any], item_count: int, duration_ms: int | None) -> None:
        """Write the event row, its change rows and the new state."""
        c, eid = self.conn, self.event_id
        c.execute(
            'INSERT INTO events (id, "user", at, kind, payload, item_count, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?)',
            (eid, self.user, self.at, kind, json.dumps(payload, ensure_ascii=False, sort_keys=True), item_count, duration_ms),
        )
        for lid, before in self._label_before.items():
            row = self.labels[lid]
            after = row.snapshot()
            if before is None:
                c.execute(
                    "INSERT INTO labels (id, name, aliases, active, created_by, created_at, n_items) VALUES (?, ?, ?, ?, ?, ?, 0)",
                    (lid, row.name, json.dumps(row.aliases, ensure_ascii=False), int(row.active), row.created_by, row.created_at),
                )
            if before != after:
                c.execute(
                    "INSERT INTO label_changes (event_id, label_id, before, after) VALUES (?, ?, ?, ?)",
                    (eid, lid, None if before is None else json.dumps(before, ensure_ascii=False), json.dumps(after, ensure_ascii=False)),
                )
        rows: list[tuple[Any, ...]] = []
        upserts: list[tuple[str, int, int]] = []
        deletes: list[tuple[str]] = []
        for i, item_before in self._item_before.items():
            item_after = self._items[i]
            if item_after == item_before:
                continue
            rows.append((eid, i, *(item_before or (None, None)), *(item_after or (None, None))))
            if item_after is None:
                deletes.append((i,))
            else:
                upserts.append((i, item_after[0], item_after[1]))
        c.executemany("INSERT INTO item_changes VALUES (?, ?, ?, ?, ?, ?)", rows)
        c.executemany("DELETE FROM item_state WHERE item_id = ?", deletes)
        c.executemany(
            "INSERT INTO item_state (item_id, label_id, event_id) VALUES (?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET label_id = excluded.label_id, event_id = excluded.event_id",
            upserts,
        )
        ex_rows: list[tuple[Any, str, int, int]] = []
        ex_add: list[tuple[str, int]] = []
        ex_del: list[tuple[str, int]] = []
        for (i, lid), excl_before in self._excl_before.items():
            excl_after = self._excl[(i, lid)]
            if excl_after == excl_before:
                continue
            ex_rows.append((eid, i, lid, int(excl_after)))
            (ex_add if excl_after else ex_del).append((i, lid))
        c.executemany("INSERT INTO exclusions (item_id, label_id) VALUES (?, ?) ON CONFLICT DO NOTHING", ex_add)
        c.executemany("DELETE FROM exclusions WHERE item_id = ? AND label_id = ?", ex_del)
        c.executemany("INSERT INTO excl_changes VALUES (?, ?, ?, ?)", ex_rows)
        for lid in sorted(set(self._label_before) | self._counted):
            row = self.labels[lid]
            c.execute(
                "UPDATE labels SET name = ?, aliases = ?, active = ?, n_items = ? WHERE id = ?",
                (row.name, json.dumps(row.aliases, ensure_ascii=False), int(row.active), row.count, lid),
            )
        if kind in ACTION_KINDS:
            c.execute('INSERT INTO actions (event_id, "user", undone, toggled_by) VALUES (?, ?, 0, 0)', (eid, self.user))


def dedupe_aliases(aliases: Iterable[str], name: str) -> list[str]:
    """Aliases without repeats (case-insensitively) and without the label's own name."""
    seen = {name_key(name)}
    out = []
    for a in aliases:
        k = name_key(a)
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out
