"""The label store: every curator action as an event, current labels derived from them.

One database holds the known item ids, the label objects (id, name, aliases, who made them and
when), the append-only event log, the exact changes each event made, and the current state derived
from those changes::

    store = LabelStore.open(Workspace("ws"))                  # the workspace's labels.sqlite
    store = LabelStore("postgresql://db.example/labels")      # or a PostgreSQL database
    store.assign(cluster_ids, "mug", user="ana", exclude=[odd_one], duration_ms=4200)
    store.rename_label("mug", "coffee mug", user="ana")     # "mug" stays as an alias
    store.undo(user="ana")                                    # exactly reverses the rename
    store.item_labels()                                       # {item id: "mug", ...}

:class:`LabelStore` is the one interface; ``LabelStore(location)`` gives the backend the location
names (:mod:`corral.storage.label_location`): :class:`~corral.storage.labels_sqlite.SqliteLabelStore`,
one SQLite file in WAL mode, the embedded default, or
:class:`~corral.storage.labels_pg.PostgresLabelStore` for several servers on one database. Both run
the same actions, replay and checks on the same SQL (:mod:`corral.storage.events`,
:mod:`corral.storage.event_replay`); a backend provides only connections and transactions.

Every action is one transaction, committed (and by default fsynced) before the call returns;
threads and processes may write at once (writers are serialised; ``timeout_s`` bounds the
wait). Bad input raises :class:`LabelError` before anything is written (the checks are in
:mod:`corral.storage.label_checks`); import files are read by :mod:`corral.storage.label_import`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.storage import event_replay
from corral.storage import events as ev
from corral.storage.diskerrors import WorkspaceWriteError
from corral.storage.events import ActionResult, Conn, Event, LabelError, LabelInfo, LabelStoreUnavailable, Txn, name_key
from corral.storage.label_checks import check_duration, check_ids, check_name, check_user, require_known, require_label, warn_look_alikes
from corral.storage.label_location import StoreLocation, parse

if TYPE_CHECKING:
    from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["ActionResult", "Event", "LabelError", "LabelInfo", "LabelStore", "LabelStoreUnavailable", "StoreSnapshot", "check_name"]


@dataclass(frozen=True)
class StoreSnapshot:
    """The whole state at one version, read in one transaction (for exports and publishing)."""

    version: int
    labels: list[LabelInfo]
    items: dict[str, tuple[str, str, float]]  # item id -> (label, labelled_by, labelled_at)
    exclusions: dict[str, list[str]]  # item id -> names of labels it is excluded from
    events: int  # number of events


Plan = Callable[[Txn], "tuple[dict[str, Any], list[str], Callable[[Conn], None] | None]"]


MAX_WARNINGS = 10  # warnings one answer carries; more are counted in the last one


def _short(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return list(warnings)
    return [*warnings[: MAX_WARNINGS - 1], f"and {len(warnings) - MAX_WARNINGS + 1:,} more names that look like other labels or mix scripts"]


class LabelStore:
    """Labels of one workspace, as an append-only event log plus the state derived from it.

    ``LabelStore(location, **options)`` opens the backend the location names: a path or
    ``sqlite:PATH`` (SQLite, created when missing) or ``postgresql://...`` (PostgreSQL; its tables
    are created or migrated on open). Options both take:

    Args:
        synchronous: ``FULL`` (default) makes every acknowledged action survive power loss;
            ``NORMAL`` survives a killed process but may lose the last actions on power loss, and
            is faster (SQLite's ``synchronous``; PostgreSQL's ``synchronous_commit`` on or off).
        timeout_s: how long a writer waits for another writer before giving up.
    """

    #: the backend's name (``sqlite`` or ``postgresql``)
    kind: str = ""
    #: where the store lives
    location: StoreLocation
    #: why writes are refused when the store could only be opened read-only (else None)
    read_only: WorkspaceWriteError | None = None
    _synced: dict[str, str] | None = None  # the workspace files registered, by sync_workspace

    def __new__(cls, location: "str | os.PathLike[str] | None" = None, **kwargs: Any) -> "LabelStore":
        if cls is LabelStore:
            if location is None:
                raise LabelError("LabelStore needs a location: a SQLite path or a postgresql:// URL")
            if parse(location).kind == "postgresql":
                from corral.storage.labels_pg import PostgresLabelStore

                cls = PostgresLabelStore
            else:
                from corral.storage.labels_sqlite import SqliteLabelStore

                cls = SqliteLabelStore
        return object.__new__(cls)

    @classmethod
    def open(cls, workspace: "Workspace | str | os.PathLike[str]", *, labels: "str | os.PathLike[str] | None" = None, **kwargs: Any) -> "LabelStore":
        """The workspace's store, with the workspace's items (status ok) and map points registered
        as known ids. ``labels`` names another store (else ``$CORRAL_LABELS``, else the
        workspace's ``labels.sqlite``)."""
        from corral.storage.label_location import resolve
        from corral.storage.workspace import Workspace

        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        where = resolve(ws, labels)
        store = LabelStore(where.target, **kwargs)
        store.sync_workspace(ws)
        return store

    def sync_workspace(self, workspace: "Workspace") -> int:
        """Register the ids of item shards and maps that appeared or changed since the store last
        looked (an embed or map run that finished meanwhile); returns how many ids were new. Only
        new files are read, and nothing when no file changed, so callers may ask before every action."""
        from corral.storage.known_items import ids_in, workspace_marks

        if self.read_only is not None:  # nothing can be written; reads need no registered ids
            return 0
        marks = workspace_marks(workspace)
        current = {k: m for k, (_, m) in marks.items()}
        if current == self._synced:
            return 0
        seen = json.loads(self._meta("workspace_files") or "{}")
        ids: list[str] = []
        for key, (path, mark) in marks.items():
            if seen.get(key) == mark:
                continue
            found = ids_in(path)
            if found is None:
                current.pop(key)  # unreadable now: look again next time
            else:
                ids += found
        added = self.register_items(ids) if ids else 0
        if current != seen:
            self._set_meta("workspace_files", json.dumps(current, sort_keys=True))
        self._synced = current
        if ids:
            logger.info("label store %s: %d ids from new item shards or maps (%d new)", self.location, len(ids), added)
        return added

    # -- what a backend provides ---------------------------------------------------------------
    def _conn(self) -> Conn:
        """This thread's connection, outside any transaction (each statement commits alone)."""
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Conn]:
        """One write transaction, serialised with every other writer of the store (any process,
        any host), committed durably when the block ends, rolled back when it raises."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Conn]:
        """One read transaction: every statement in it sees the same version."""
        raise NotImplementedError

    def register_items(self, ids: Iterable[str]) -> int:
        """Make ids known (crops, newly embedded items, ...); returns how many were new."""
        raise NotImplementedError

    def _batch(self, conn: Conn) -> AbstractContextManager[object]:
        """Statements in this block may be sent together, their results unread until it ends
        (PostgreSQL's pipeline: one round trip for an action's writes); SQLite runs them in turn."""
        return nullcontext()

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        raise NotImplementedError

    def listen(self, on_version: Callable[[int], None]) -> Callable[[], None] | None:
        """Call ``on_version(version)`` from a background thread whenever any writer (any process,
        any host) commits an event; returns a function that stops it. None when the backend cannot
        push (SQLite: readers poll :meth:`version`, which is cheap there)."""
        return None

    def _meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        with self._write() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- items ---------------------------------------------------------------------------------
    def known_items(self) -> int:
        """How many item ids the store knows."""
        return int(self._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def known_ids(self) -> set[str]:
        """Every item id the store knows."""
        return {r[0] for r in self._conn().execute("SELECT id FROM items")}

    # -- actions -------------------------------------------------------------------------------
    def _act(self, kind: str, user: str, duration_ms: int | None, plan: Plan) -> ActionResult:
        user = check_user(user)
        duration_ms = check_duration(duration_ms)
        with self._write() as conn:
            tx = Txn(conn, user, time.time())
            payload, named, after = plan(tx)
            changed = tx.changed_items()
            touched = list(dict.fromkeys([*named, *changed]))
            if tx.conflicts:
                payload["conflicts"] = tx.conflicts
            with self._batch(conn):  # the writes need no answers: one round trip where the backend can
                tx.flush(kind=kind, payload=payload, item_count=len(touched), duration_ms=duration_ms)
                if after is not None:
                    after(conn)
            states = tx.states(touched)
            result = ActionResult(
                event_id=tx.event_id,
                version=tx.event_id,
                kind=kind,
                changed={i: (tx.labels[s[0]].name if s else None) for i, s in states.items()},
                labels=sorted((r.info() for r in tx.labels.values() if r.active), key=lambda li: name_key(li.name)),
                conflicts=tx.conflicts,
                warnings=_short(tx.warnings),
            )
        logger.debug("event %d %s by %s: %d items", result.event_id, kind, user, len(touched))
        for w in result.warnings:
            logger.debug("event %d: %s", result.event_id, w)
        return result

    def assign(self, item_ids: Iterable[str], label: str, *, user: str, exclude: Iterable[str] = (), duration_ms: int | None = None) -> ActionResult:
        """Name a selection: ``item_ids`` minus ``exclude`` get ``label`` (created when new, matched
        case-insensitively by name or alias). Items in ``exclude`` are remembered as "not ``label``"
        and lose it if they had it; an excluded item that carries another label keeps that one."""
        ids = check_ids(item_ids, "item_ids")
        ex = check_ids(exclude, "exclude", allow_empty=True)
        name = check_name(label)

        def plan(tx: Txn):
            require_known(tx, ids + ex, "assign")
            row = tx.resolve(name)
            created = row is None
            if row is None:
                row = tx.create_label(name)
                warn_look_alikes(tx, [row])
            exs = set(ex)
            take = [i for i in ids if i not in exs]
            tx.states(ids + ex)
            tx.label_items(take, row.id)
            tx.set_excluded_many(take, row.id, False)
            tx.excluded(ex, row.id)
            for i in ex:
                state = tx.state(i)
                if state is not None and state[0] == row.id:
                    tx.set_item(i, None)
                tx.set_excluded(i, row.id, True)
            payload = {"label": row.name, "label_id": row.id, "created": created, "items": take, "exclude": ex}
            return payload, ids + ex, None

        return self._act("assign", user, duration_ms, plan)

    def exclude(self, item_ids: Iterable[str], label: str, *, user: str, duration_ms: int | None = None) -> ActionResult:
        """Remember ``item_ids`` as "not ``label``"; those that carried it become unlabelled."""
        ids = check_ids(item_ids, "item_ids")
        name = check_name(label)

        def plan(tx: Txn):
            require_known(tx, ids, "exclude")
            row = require_label(tx, name)
            tx.states(ids)
            tx.excluded(ids, row.id)
            for i in ids:
                state = tx.state(i)
                if state is not None and state[0] == row.id:
                    tx.set_item(i, None)
                tx.set_excluded(i, row.id, True)
            return {"label": row.name, "label_id": row.id, "items": ids}, ids, None

        return self._act("exclude", user, duration_ms, plan)

    def unlabel(self, item_ids: Iterable[str], *, user: str, duration_ms: int | None = None) -> ActionResult:
        """Remove whatever label ``item_ids`` carry (exclusions are kept)."""
        ids = check_ids(item_ids, "item_ids")

        def plan(tx: Txn):
            require_known(tx, ids, "unlabel")
            tx.label_items(ids, None)
            return {"items": ids}, ids, None

        return self._act("unlabel", user, duration_ms, plan)

    def rename_label(self, old: str, new: str, *, user: str, duration_ms: int | None = None) -> ActionResult:
        """Rename a label; the old name stays as an alias, so it still finds the label."""
        old_name, new_name = check_name(old, "old label"), check_name(new, "new label")

        def plan(tx: Txn):
            row = require_label(tx, old_name)
            if row.name == new_name:
                raise LabelError(f"label {row.name!r} is already called that; nothing to rename")
            other = tx.owner_of(name_key(new_name), besides=row.id)
            if other is not None:
                raise LabelError(f"cannot rename {row.name!r} to {new_name!r}: label {other.name!r} already uses that name; merge them instead")
            previous = row.name
            aliases = [a for a in row.aliases if name_key(a) != name_key(new_name)] + [previous]
            tx.update_label(row, name=new_name, aliases=aliases)
            if name_key(previous) != name_key(new_name):  # a change of case or spelling is not a new name
                warn_look_alikes(tx, [row])
            payload = {"label_id": row.id, "old": previous, "new": new_name}
            return payload, tx.items_of(row.id), None

        return self._act("rename", user, duration_ms, plan)

    def merge_labels(self, sources: list[str], into: str, *, user: str, duration_ms: int | None = None) -> ActionResult:
        """Move every item of ``sources`` to ``into`` (created when new); the sources' names become
        aliases of ``into`` and their exclusions carry over."""
        if isinstance(sources, str) or not isinstance(sources, Iterable):
            raise LabelError(f"sources must be a list of label names, not {type(sources).__name__} {sources!r:.60}")
        names = [check_name(s, "source label") for s in sources]
        into_name = check_name(into, "target label")
        if not names:
            raise LabelError("sources is empty; name at least one label to merge")

        def plan(tx: Txn):
            rows = list({r.id: r for r in (require_label(tx, n, "source label") for n in names)}.values())
            target = tx.resolve(into_name)
            rows = [r for r in rows if target is None or r.id != target.id]
            if not rows:
                raise LabelError(f"nothing to merge: every source is {into_name!r} itself")
            created = target is None
            if target is None:
                target = tx.create_label(into_name)
                warn_look_alikes(tx, [target])
            moved: list[str] = []
            for src in rows:
                items = tx.items_of(src.id)
                tx.label_items(items, target.id)
                moved += items
                for i in tx.excluded_of(src.id):
                    tx.set_excluded(i, src.id, False)
                    state = tx.state(i)
                    if state is None or state[0] != target.id:
                        tx.set_excluded(i, target.id, True)
                tx.update_label(src, active=False)
            tx.update_label(target, aliases=[*target.aliases, *(a for r in rows for a in (r.name, *r.aliases))])
            payload = {"sources": [r.name for r in rows], "source_ids": [r.id for r in rows], "into": target.name, "into_id": target.id, "created": created}
            return payload, moved, None

        return self._act("merge", user, duration_ms, plan)

    def delete_label(self, name: str, *, user: str, duration_ms: int | None = None) -> ActionResult:
        """Delete a label: its items become unlabelled and its exclusions are dropped."""
        label = check_name(name)

        def plan(tx: Txn):
            row = require_label(tx, label)
            items = tx.items_of(row.id)
            tx.label_items(items, None)
            for i in tx.excluded_of(row.id):
                tx.set_excluded(i, row.id, False)
            tx.update_label(row, active=False)
            return {"label": row.name, "label_id": row.id, "items": len(items)}, items, None

        return self._act("delete", user, duration_ms, plan)

    def import_labels(self, assignments: Mapping[str, str], *, user: str, source: str = "", overwrite: bool = True, duration_ms: int | None = None) -> ActionResult:
        """Bring in existing labels or ground truth as ONE undoable event.

        ``assignments`` maps item id -> label name. Every id must be known and every name valid,
        else nothing is written. With ``overwrite=False`` items that already carry a label keep it.
        """
        if not isinstance(assignments, Mapping):
            raise LabelError(f"assignments must map item id -> label, not {type(assignments).__name__}")
        ids = check_ids(list(assignments), "assignments")
        groups: dict[str, tuple[str, list[str]]] = {}
        for i in ids:
            name = check_name(assignments[i], f"label of item {i}")
            groups.setdefault(name_key(name), (name, []))[1].append(i)

        def plan(tx: Txn):
            require_known(tx, ids, "import")
            counts: dict[str, int] = {}
            created: list[str] = []
            kept = 0
            new_rows = []
            for name, members in groups.values():
                row = tx.resolve(name)
                if row is None:
                    row = tx.create_label(name)
                    created.append(row.name)
                    new_rows.append(row)
                if not overwrite:
                    states = tx.states(members)
                    kept += sum(1 for i in members if states[i] is not None and states[i][0] != row.id)
                    members = [i for i in members if states[i] is None or states[i][0] == row.id]
                tx.label_items(members, row.id)
                tx.set_excluded_many(members, row.id, False)
                counts[row.name] = counts.get(row.name, 0) + len(members)
            warn_look_alikes(tx, new_rows)
            payload = {"source": source, "counts": counts, "created": created, "kept_existing": kept, "overwrite": overwrite}
            return payload, [], None

        return self._act("import", user, duration_ms, plan)

    def revise(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        user: str,
        new_items: Iterable[str] = (),
        relabel: Mapping[str, str | None] | None = None,
        exclude: Mapping[str, str] | None = None,
        duration_ms: int | None = None,
    ) -> ActionResult:
        """Record a revision of something beside labels (one of ``events.REVISION_KINDS``) as ONE
        undoable event.

        ``payload`` (JSON) says what changed; readers rebuild the current state from the revisions
        still in force (:meth:`in_force`). ``new_items`` become known ids in the same transaction;
        ``relabel`` (item id -> label name, None to unlabel) moves labels with the revision, and
        ``exclude`` (item id -> an existing label) marks items as not that label (a negative); an
        undo reverses both.
        """
        if kind not in ev.REVISION_KINDS:
            raise LabelError(f"kind={kind!r}: expected one of {', '.join(ev.REVISION_KINDS)}")
        body = json.loads(json.dumps(dict(payload)))  # JSON only, copied
        new = check_ids(new_items, "new_items", allow_empty=True)
        moves = dict(relabel or {})
        check_ids(list(moves), "relabel", allow_empty=True)
        names = {i: (None if n is None else check_name(n, f"label of item {i}")) for i, n in moves.items()}
        negatives = {i: check_name(n, f"label item {i} is excluded from") for i, n in dict(exclude or {}).items()}
        check_ids(list(negatives), "exclude", allow_empty=True)

        def plan(tx: Txn):
            tx.conn.executemany("INSERT INTO items (id) VALUES (?) ON CONFLICT DO NOTHING", [(i,) for i in new])
            require_known(tx, [*names, *negatives], kind)
            for item_id, name in negatives.items():
                tx.set_excluded_many([item_id], require_label(tx, name).id, True)
            for item_id, name in names.items():
                if name is None:
                    tx.label_items([item_id], None)
                    continue
                row = tx.resolve(name)
                if row is None:
                    row = tx.create_label(name)
                    warn_look_alikes(tx, [row])
                tx.label_items([item_id], row.id)
            return body, list(dict.fromkeys([*names, *negatives])), None

        return self._act(kind, user, duration_ms, plan)

    def in_force(self, kind: str) -> list[Event]:
        """Events of ``kind`` that are not undone now, oldest first (the revisions that hold)."""
        q = 'SELECT e.id, e."user", e.at, e.kind, e.payload, e.item_count, e.duration_ms FROM events e JOIN actions a ON a.event_id = e.id WHERE e.kind = ? AND a.undone = 0 ORDER BY e.id'
        rows = self._conn().execute(q, (kind,)).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def _toggle(self, *, user: str, redo: bool) -> ActionResult:
        user = check_user(user)
        word = "redo" if redo else "undo"

        def plan(tx: Txn):
            target = event_replay.last_action(tx.conn, user, redo=redo)
            if target is None:
                raise LabelError(f"nothing to {word} for user {user!r}")
            kind = tx.conn.execute("SELECT kind FROM events WHERE id = ?", (target,)).fetchone()[0]
            event_replay.invert(tx, target, redo=redo)
            eid = tx.event_id

            def after(conn: Conn) -> None:
                conn.execute("UPDATE actions SET undone = ?, toggled_by = ? WHERE event_id = ?", (0 if redo else 1, eid, target))

            return {"target": target, "target_kind": kind}, [], after

        return self._act(word, user, None, plan)

    def undo(self, *, user: str) -> ActionResult:
        """Undo ``user``'s newest action that is not undone yet. Exact for the user's own changes;
        changes someone else has overwritten since are left alone and counted in ``conflicts``."""
        return self._toggle(user=user, redo=False)

    def redo(self, *, user: str) -> ActionResult:
        """Redo the action ``user`` undid most recently, unless they have acted since."""
        return self._toggle(user=user, redo=True)

    # -- reads ---------------------------------------------------------------------------------
    def labels(self, *, include_inactive: bool = False) -> list[LabelInfo]:
        """Labels (active ones unless asked), sorted by name case-insensitively."""
        rows = ev.load_labels(self._conn()).values()
        return sorted((r.info() for r in rows if include_inactive or r.active), key=lambda li: name_key(li.name))

    def item_labels(self) -> dict[str, str]:
        """Item id -> current label name, for labelled items only."""
        q = "SELECT s.item_id, l.name FROM item_state s JOIN labels l ON l.id = s.label_id"
        return dict(self._conn().execute(q).fetchall())

    def exclusions(self) -> dict[str, set[str]]:
        """Item id -> names of the labels it was excluded from."""
        out: dict[str, set[str]] = {}
        q = "SELECT e.item_id, l.name FROM exclusions e JOIN labels l ON l.id = e.label_id WHERE l.active = 1"
        for item_id, name in self._conn().execute(q):
            out.setdefault(item_id, set()).add(name)
        return out

    def snapshot(self) -> StoreSnapshot:
        """Labels, item states and exclusions at one consistent version."""
        with self._read() as c:
            version = int(c.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
            n_events = int(c.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            labels = sorted((r.info() for r in ev.load_labels(c).values() if r.active), key=lambda li: name_key(li.name))
            q = 'SELECT s.item_id, l.name, e."user", e.at FROM item_state s JOIN labels l ON l.id = s.label_id JOIN events e ON e.id = s.event_id'
            items = {r[0]: (r[1], r[2], r[3]) for r in c.execute(q)}
            excl: dict[str, list[str]] = {}
            q = "SELECT e.item_id, l.name FROM exclusions e JOIN labels l ON l.id = e.label_id WHERE l.active = 1 ORDER BY e.item_id, l.name"
            for item_id, name in c.execute(q):
                excl.setdefault(item_id, []).append(name)
        return StoreSnapshot(version, labels, items, excl, n_events)

    def version(self) -> int:
        """Id of the newest event (0 when none)."""
        return int(self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def events(self, since: int = 0, limit: int = 1000, *, user: str | None = None) -> list[Event]:
        """Events with id > ``since``, oldest first, at most ``limit`` (1..100,000)."""
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise LabelError(f"since={since!r}: expected an event id >= 0")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise LabelError(f"limit={limit!r}: expected 1 to 100,000")
        q = 'SELECT id, "user", at, kind, payload, item_count, duration_ms FROM events WHERE id > ?'
        args: list[Any] = [since]
        if user is not None:
            q += ' AND "user" = ?'
            args.append(user)
        q += " ORDER BY id LIMIT ?"
        rows = self._conn().execute(q, [*args, limit]).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def event_items(self, event_id: int) -> dict[str, str | None]:
        """Items whose label an event changed -> the label it gave them (None = unlabelled)."""
        q = "SELECT c.item_id, l.name FROM item_changes c LEFT JOIN labels l ON l.id = c.after_label WHERE c.event_id = ? ORDER BY c.rowid"
        return dict(self._conn().execute(q, (event_id,)).fetchall())

    def curator_stats(self) -> list[dict[str, Any]]:
        """Per curator: actions, undos, items per action, time per action and actions per hour
        (over the time the curators reported spending, ``duration_ms``)."""
        return ev.curator_stats(self._conn())

    def check(self) -> list[str]:
        """Differences between the current labels and a replay of the events (empty = consistent)."""
        with self._read() as c:
            return event_replay.check(c)

    def backup(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent copy of the whole store (history included) as one SQLite file at ``dest``."""
        from corral.storage.label_copy import copy_store

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for old in (dest, dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
            old.unlink(missing_ok=True)
        with LabelStore(dest) as target:
            copy_store(self, target)
        import sqlite3

        conn = sqlite3.connect(str(dest))
        try:
            conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            conn.close()
        return dest
