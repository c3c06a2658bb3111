"""The operation log: one row per request that changed something or failed, per user.

Where the label store keeps *what* the labels became (its events), the operation log keeps what
each person *asked for* and how it went: the time, the route and method, the outcome and HTTP
status, how many items the request touched, and the label-store event it produced (so the two
join on ``event_id``). Refused, invalid and conflicting requests are there too: they change no
label, and so leave no event.

The log sits behind :class:`OperationLog`, a deliberately narrow interface (append a batch, read
a page, close), so that a server database can hold it later beside a server label store. This
module has the embedded one, :class:`SQLiteOperationLog`: its own SQLite file in the workspace
(``operations.sqlite``), in WAL mode with ``synchronous=NORMAL``: a killed process loses nothing
written, a power cut may lose the last rows, never a label (the label store is fsynced on its own).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from corral.storage.events import immediate

if TYPE_CHECKING:
    from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

FILE_NAME = "operations.sqlite"
#: the columns of an exported row, in order
COLUMNS = ("id", "at", "user", "method", "route", "path", "status", "outcome", "items", "event_id", "client", "detail")
#: outcome of a request, from its HTTP status
OUTCOMES = {400: "invalid", 401: "refused", 403: "refused", 404: "not found", 405: "invalid", 408: "invalid", 409: "conflict", 413: "invalid", 422: "invalid", 429: "refused"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    items INTEGER,
    event_id INTEGER,
    client TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_user ON operations (user, id);
"""


def outcome_of(status: int) -> str:
    """``ok`` for 1xx-3xx, else what went wrong in one word or two (see :data:`OUTCOMES`)."""
    if status < 400:
        return "ok"
    if status >= 500:
        return "unavailable" if status in (503, 507) else "error"
    return OUTCOMES.get(status, "invalid")


@dataclass(frozen=True)
class Operation:
    """One logged request. ``id`` is given by the log when the row is stored (0 before)."""

    at: float  # Unix seconds, UTC
    user: str  # the signed-in user; "" when nobody was (a refused request without credentials)
    method: str
    route: str  # the route's template, such as /api/maps/{name}/actions/assign
    path: str  # the path as sent (cut to 300 characters)
    status: int
    outcome: str  # ok, invalid, refused, not found, conflict, unavailable, error
    items: int | None = None  # items the request touched, when it says
    event_id: int | None = None  # the label-store event it produced
    client: str = ""  # the client's address
    detail: str = ""  # the error message of a failed request, or what a successful one did
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class OperationLog(Protocol):
    """Where operations are kept. Kept narrow on purpose: a backend implements these four."""

    def append(self, ops: Sequence[Operation]) -> None:
        """Store a batch of operations in one transaction (all or none)."""
        ...

    def query(self, *, user: str | None = None, before: int | None = None, after: int = 0, limit: int = 100) -> list[Operation]:
        """Operations, newest first: of ``user`` (everyone's when None), with ids below ``before``
        and above ``after``, at most ``limit``."""
        ...

    def iter_all(self, *, batch: int = 10_000) -> Iterator[Operation]:
        """Every operation, oldest first (for exports)."""
        ...

    def close(self) -> None: ...


class SQLiteOperationLog:
    """:class:`OperationLog` in one SQLite file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not self.path.exists():  # who did what is for the server's user only (SQLite's -wal and -shm follow)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._conn().executescript(SCHEMA)

    @classmethod
    def open(cls, workspace: "Workspace | str | os.PathLike[str]") -> "SQLiteOperationLog":
        from corral.storage.workspace import Workspace

        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        return cls(ws.root / FILE_NAME)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.timeout_s)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def append(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return
        with immediate(self._conn()) as conn:
            conn.executemany(
                "INSERT INTO operations (at, user, method, route, path, status, outcome, items, event_id, client, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(o.at, o.user, o.method, o.route, o.path[:300], o.status, o.outcome, o.items, o.event_id, o.client, o.detail[:500]) for o in ops],
            )

    def query(self, *, user: str | None = None, before: int | None = None, after: int = 0, limit: int = 100) -> list[Operation]:
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit={limit!r}: expected 1 to 10,000")
        q = f"SELECT {', '.join(COLUMNS)} FROM operations WHERE id > ?"
        args: list[Any] = [after]
        if user is not None:
            q += " AND user = ?"
            args.append(user)
        if before is not None:
            q += " AND id < ?"
            args.append(before)
        q += " ORDER BY id DESC LIMIT ?"
        return [_row(r) for r in self._conn().execute(q, [*args, limit])]

    def iter_all(self, *, batch: int = 10_000) -> Iterator[Operation]:
        last = 0
        while True:
            rows = self._conn().execute(f"SELECT {', '.join(COLUMNS)} FROM operations WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            for r in rows:
                yield _row(r)
            last = rows[-1][0]

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()


def _row(r: Sequence[Any]) -> Operation:
    d = dict(zip(COLUMNS, r, strict=True))
    return Operation(**d)
