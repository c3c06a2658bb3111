"""The embedded label store: one SQLite file in WAL mode (the default, ``labels.sqlite``).

Right for one server process on one machine and a handful of curators; writers of every thread and
process queue on SQLite's write lock. :mod:`corral.storage.labels_pg` is the same store in
PostgreSQL, for several servers on one database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from corral.storage import events as ev
from corral.storage.diskerrors import WorkspaceReadOnly, connect_read_only, folder_problem, is_unopenable, write_problem
from corral.storage.events import LabelError
from corral.storage.label_checks import check_ids
from corral.storage.label_location import parse
from corral.storage.labels import LabelStore

logger = logging.getLogger(__name__)


class SqliteLabelStore(LabelStore):
    """The label store in one SQLite file (created with its folder when missing).

    Args:
        path: the file, or ``sqlite:PATH``.
        synchronous: SQLite's ``synchronous`` setting. ``FULL`` (default) fsyncs every action,
            so acknowledged actions survive power loss; ``NORMAL`` survives a killed process
            but may lose the last actions on power loss, and is faster.
        timeout_s: how long a writer waits for another writer before giving up.
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL", timeout_s: float = 60.0):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise LabelError(f"synchronous={synchronous!r}: expected FULL, NORMAL or EXTRA")
        if timeout_s <= 0:
            raise LabelError(f"timeout_s={timeout_s!r}: must be > 0")
        self.location = parse(path)
        if self.location.kind != "sqlite":
            raise LabelError(f"{self.location} is not a SQLite file")
        self.path = self.location.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # writers of this process queue here instead of busy-waiting
        self._pid = os.getpid()
        self._closed = False
        self._synced = None
        self.read_only = None
        try:
            ev.create_schema(self._conn())
        except sqlite3.DatabaseError as e:
            self.close()
            if not is_unopenable(e):
                raise LabelError(f"{self.path} is not a Corral label store ({e}); pick another file") from None
            self._open_read_only(e)

    def _open_read_only(self, cause: sqlite3.Error) -> None:
        """Open for reading a store whose folder cannot be written (a read-only or full disk), so
        the workspace can still be browsed; every write then raises why. A store that does not
        exist yet is an empty one in memory."""
        self.read_only = folder_problem(self.path.parent, "the label store") or write_problem(cause, "the label store") or WorkspaceReadOnly("the label store")
        self._closed, self._local, self._conns = False, threading.local(), []
        try:
            if "items" not in {r[0] for r in self._conn().execute("SELECT name FROM sqlite_master")}:
                raise LabelError(f"{self.path} is not a Corral label store (no items table); pick another file")
        except sqlite3.DatabaseError as e:
            self.close()
            raise LabelError(f"{self.path} is not a Corral label store ({e}); pick another file") from None
        logger.warning("label store %s opened read-only: %s", self.path, self.read_only)

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise LabelError(f"label store {self.path} is closed")
        if os.getpid() != self._pid:  # forked: the parent's connections must not be used here
            self._local, self._conns, self._pid = threading.local(), [], os.getpid()
            self._lock = threading.Lock()
        conn = getattr(self._local, "conn", None)
        if conn is None and self.read_only is not None:
            if self.path.exists():
                conn = connect_read_only(self.path, timeout_s=self._timeout_s)
            else:  # nothing labelled yet, and nowhere to write: an empty store
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                ev.create_schema(conn)
            self._local.conn = conn
            self._conns.append(conn)
        elif conn is None:
            conn = ev.connect(self.path, synchronous=self._synchronous, timeout_s=self._timeout_s)
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only is not None:
            raise type(self.read_only)("the label store")
        conn = self._conn()
        with self._lock:
            try:
                with ev.immediate(conn):
                    yield conn
            except sqlite3.Error as e:  # a full disk or a file made read-only meanwhile: say so
                problem = write_problem(e, "the label store")
                if problem is None:
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise problem from e

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        for conn in self._conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - already closed
                pass
        self._conns = []

    def register_items(self, ids: Iterable[str]) -> int:
        ids = check_ids(ids, "ids", allow_empty=True)
        with self._write() as c:
            before = c.total_changes
            for part in ev.chunks(ids, 5000):
                c.executemany("INSERT INTO items (id) VALUES (?) ON CONFLICT DO NOTHING", [(i,) for i in part])
            return c.total_changes - before

    def backup(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent copy of the whole store (history included) at ``dest``, by SQLite's own
        online backup (page by page: faster than the row copy other backends use)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for old in (dest, dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
            old.unlink(missing_ok=True)
        target = sqlite3.connect(str(dest))
        try:
            self._conn().backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
        return dest
