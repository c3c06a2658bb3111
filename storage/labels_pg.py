"""The label store in PostgreSQL: several API servers (and the command line) on one database.

The same engine as the SQLite store runs on it (:mod:`corral.storage.events`,
:mod:`corral.storage.event_replay`): this module provides connections, transactions, the schema's
versioned migrations and the push of new versions. The SQL stays plain; a thin adapter lets the
engine's ``?`` parameters reach psycopg.

- **Writers** are serialised across every process and host by one transaction-scoped advisory
  lock, as SQLite serialises them on its file: each action reads, decides and writes as if alone,
  and event ids stay gap-free and in commit order. An action is acknowledged only after its
  ``COMMIT`` returned (``synchronous_commit`` on unless ``synchronous="NORMAL"``).
- **Readers** of a consistent version (snapshots, exports, checks) run in one ``REPEATABLE READ``
  transaction.
- **New versions are pushed**: a trigger on ``events`` sends ``NOTIFY corral_labels, '<id>'`` in
  the inserting transaction, delivered when it commits; :meth:`PostgresLabelStore.listen` turns
  them into calls, which feed the viewer's server-sent events on every server.
- **Migrations** are numbered; ``schema_migrations`` records those applied; a store opened by an
  older Corral than its schema is refused. Any kind of event fits without a change here: kinds and
  payloads are text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any

import psycopg

from corral.storage.events import Conn, LabelError, LabelStoreUnavailable
from corral.storage.label_checks import check_ids
from corral.storage.label_location import parse, redact
from corral.storage.labels import LabelStore

logger = logging.getLogger(__name__)

#: The channel every commit of an event is announced on (payload: the event id).
CHANNEL = "corral_labels"
#: The advisory lock that serialises writers (any 64-bit number no other tool on the database uses).
WRITE_LOCK = 0x636F7272616C  # "corral"
#: The lock held while migrating, so servers starting together migrate once.
MIGRATE_LOCK = WRITE_LOCK + 1
#: Connections one store holds for transactions, besides the one its threads share for single
#: statements: an API server's worker threads (dozens) then cost the database a handful of
#: connections, not one each. Writers queue on the database's lock anyway.
POOL = 8

_T = 'TEXT COLLATE "C"'  # byte order, as SQLite compares text: listings sort the same on both
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "the label store: items, events, labels, state, per-event changes, notify on commit",
        f"""
CREATE TABLE meta (key {_T} PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (id {_T} PRIMARY KEY);
CREATE TABLE events (
    id BIGINT PRIMARY KEY, "user" {_T} NOT NULL, at DOUBLE PRECISION NOT NULL, kind {_T} NOT NULL,
    payload TEXT NOT NULL, item_count INTEGER NOT NULL, duration_ms INTEGER
);
CREATE INDEX events_by_user ON events ("user", id);
CREATE TABLE labels (
    id BIGINT PRIMARY KEY, name {_T} NOT NULL, aliases TEXT NOT NULL, active INTEGER NOT NULL,
    created_by {_T} NOT NULL, created_at DOUBLE PRECISION NOT NULL, n_items INTEGER NOT NULL
);
CREATE TABLE item_state (item_id {_T} PRIMARY KEY, label_id BIGINT NOT NULL, event_id BIGINT NOT NULL);
CREATE INDEX item_state_by_label ON item_state (label_id);
CREATE TABLE exclusions (item_id {_T} NOT NULL, label_id BIGINT NOT NULL, PRIMARY KEY (item_id, label_id));
CREATE INDEX exclusions_by_label ON exclusions (label_id);
CREATE TABLE actions (event_id BIGINT PRIMARY KEY, "user" {_T} NOT NULL, undone INTEGER NOT NULL, toggled_by BIGINT NOT NULL);
CREATE INDEX actions_by_user ON actions ("user", undone, event_id);
-- rowid (last, so the engine's positional inserts fill the other columns) keeps write order, as
-- SQLite's implicit rowid does
CREATE TABLE item_changes (
    event_id BIGINT NOT NULL, item_id {_T} NOT NULL,
    before_label BIGINT, before_event BIGINT, after_label BIGINT, after_event BIGINT, rowid BIGSERIAL
);
CREATE INDEX item_changes_by_event ON item_changes (event_id);
CREATE TABLE excl_changes (event_id BIGINT NOT NULL, item_id {_T} NOT NULL, label_id BIGINT NOT NULL, added INTEGER NOT NULL, rowid BIGSERIAL);
CREATE INDEX excl_changes_by_event ON excl_changes (event_id);
CREATE TABLE label_changes (event_id BIGINT NOT NULL, label_id BIGINT NOT NULL, before TEXT, after TEXT NOT NULL, rowid BIGSERIAL);
CREATE INDEX label_changes_by_event ON label_changes (event_id);
CREATE FUNCTION corral_labels_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION corral_labels_notify();
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
""",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """The engine's ``?`` parameters as psycopg's ``%s`` (the engine's SQL holds no other ``?`` or ``%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection that takes the engine's SQL (``?`` parameters) and hands back cursors
    (client-side: their rows have arrived when ``execute`` returns). With ``lock``, threads may
    share it statement by statement; a transaction has a connection to itself."""

    def __init__(self, raw: psycopg.Connection[Any], lock: threading.Lock | None = None):
        self.raw = raw
        self._lock: AbstractContextManager[Any] = lock or nullcontext()

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        with self._lock:
            return self.raw.execute(_pg(sql), parameters or None)

    def executemany(self, sql: str, parameters: Any, /) -> psycopg.Cursor[Any]:
        rows = list(parameters)
        with self._lock:
            cur = self.raw.cursor()
            if rows:
                cur.executemany(_pg(sql), rows)
        return cur

    @property
    def usable(self) -> bool:
        return not (self.raw.closed or self.raw.broken)


def unavailable(url: str, e: BaseException) -> LabelStoreUnavailable:
    """One line that names the server (never its password) and what to check."""
    detail = " ".join(str(e).split()) or type(e).__name__
    for noise in ("connection failed: ", "connection is bad: "):
        detail = detail.removeprefix(noise)
    return LabelStoreUnavailable(f"cannot reach the label store at {redact(url)}: {detail[:300]}; check that the server runs and the URL (host, port, database, user) is right")


def connect(url: str, *, timeout_s: float = 10.0, synchronous: str = "FULL") -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are opened explicitly), or
    :class:`LabelStoreUnavailable` in one line."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout_s)), application_name="corral")
    except psycopg.Error as e:
        raise unavailable(url, e) from None
    if synchronous == "NORMAL":  # a killed server process loses nothing; a crashed host may lose the last commits
        conn.execute("SET synchronous_commit = off")
    return conn


def migrate(conn: psycopg.Connection[Any], url: str) -> int:
    """Apply the migrations this database lacks, once even when servers start together; returns
    the schema version. A database with tables of its own that are not a label store is refused."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        if done and max(done) > SCHEMA_VERSION:
            raise LabelError(f"label store {redact(url)} has schema version {max(done)}, newer than this Corral understands ({SCHEMA_VERSION}); upgrade Corral")
        if not done:
            row = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('events', 'items', 'labels')").fetchone()
            if row is not None:
                raise LabelError(f"{redact(url)} already has tables called events, items or labels that are not a Corral label store; pick another database")
        for version, name, sql in MIGRATIONS:
            if version not in done:
                conn.execute(sql.encode())  # bytes: run as written, no parameter parsing
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)", (version, name, time.time()))
                logger.info("label store %s: migrated to schema version %d (%s)", redact(url), version, name)
    return SCHEMA_VERSION


class PostgresLabelStore(LabelStore):
    """The label store in a PostgreSQL database (tables created or migrated on open).

    Args:
        url: ``postgresql://[user[:password]@]host[:port]/database[?options]`` (libpq's URL; a
            Unix socket folder goes in ``?host=/run/postgresql``).
        synchronous: ``FULL`` (default): an action is acknowledged once its commit is on disk.
            ``NORMAL``: ``synchronous_commit = off``, faster; a killed Corral process still loses
            nothing, a crash of the database host may lose the last actions.
        timeout_s: how long a writer waits for the others, and a connection for the server.
    """

    kind = "postgresql"

    def __init__(self, url: str | os.PathLike[str], *, synchronous: str = "FULL", timeout_s: float = 60.0):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise LabelError(f"synchronous={synchronous!r}: expected FULL, NORMAL or EXTRA")
        if timeout_s <= 0:
            raise LabelError(f"timeout_s={timeout_s!r}: must be > 0")
        self.location = parse(url)
        if self.location.kind != "postgresql":
            raise LabelError(f"{self.location} is not a postgresql:// URL")
        self.url = self.location.target
        self._synchronous = synchronous
        self._timeout_s = timeout_s
        self._conns: list[psycopg.Connection[Any]] = []  # every connection opened, to close them all
        self._conns_lock = threading.Lock()
        self._shared: PgConn | None = None  # single statements, from any thread
        self._idle: list[PgConn] = []  # for transactions, one at a time each
        self._slots = threading.BoundedSemaphore(POOL)
        self._pid = os.getpid()
        self._closed = False
        self._synced = None
        self.read_only = None
        self._listeners: list[threading.Event] = []
        conn = self._conn()
        try:
            migrate(conn.raw, self.url)
        except psycopg.OperationalError as e:
            self.close()
            raise unavailable(self.url, e) from None
        except psycopg.Error as e:
            self.close()
            raise LabelError(f"cannot set up the label store in {self.location}: {' '.join(str(e).split())[:300]}") from None

    # -- connections ---------------------------------------------------------------------------
    def _open(self, lock: threading.Lock | None = None) -> PgConn:
        raw = connect(self.url, timeout_s=min(self._timeout_s, 10.0), synchronous=self._synchronous)
        raw.execute(f"SET lock_timeout = '{int(self._timeout_s * 1000)}ms'")  # how long a writer waits for the others
        with self._conns_lock:
            self._conns.append(raw)
        return PgConn(raw, lock)

    def _check_open(self) -> None:
        if self._closed:
            raise LabelError(f"label store {self.location} is closed")
        if os.getpid() != self._pid:  # forked: the parent's connections belong to the parent
            self._conns, self._shared, self._idle, self._pid = [], None, [], os.getpid()
            self._conns_lock, self._slots = threading.Lock(), threading.BoundedSemaphore(POOL)

    def _conn(self) -> PgConn:
        """The connection every thread shares for single statements (autocommit)."""
        self._check_open()
        with self._conns_lock:
            shared = self._shared
        if shared is None or not shared.usable:  # first use, or the server restarted: connect again
            shared = self._open(threading.Lock())
            with self._conns_lock:
                self._shared = shared
        return shared

    @contextmanager
    def _lease(self) -> Iterator[PgConn]:
        """A connection of the pool for one transaction, back to the pool after it."""
        self._check_open()
        if not self._slots.acquire(timeout=self._timeout_s):
            raise LabelError(f"the label store was busy for {self._timeout_s:g}s (all {POOL} connections in use); try again")
        conn = None
        try:
            with self._conns_lock:
                while self._idle and conn is None:
                    c = self._idle.pop()
                    conn = c if c.usable else None
            if conn is None:
                conn = self._open()
            yield conn
        finally:
            if conn is not None and conn.usable and not self._closed:
                with self._conns_lock:
                    self._idle.append(conn)
            self._slots.release()

    @contextmanager
    def _write(self) -> Iterator[PgConn]:
        try:
            with self._lease() as conn, conn.raw.transaction():
                conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                yield conn
        except psycopg.errors.LockNotAvailable:
            raise LabelError(f"the label store was busy for {self._timeout_s:g}s (another writer held it); try again") from None
        except psycopg.OperationalError as e:  # the connection died: nothing of this action was acknowledged
            raise unavailable(self.url, e) from None

    @contextmanager
    def _read(self) -> Iterator[PgConn]:
        try:
            with self._lease() as conn, conn.raw.transaction():
                conn.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
        except psycopg.OperationalError as e:
            raise unavailable(self.url, e) from None

    def _batch(self, conn: Conn) -> AbstractContextManager[object]:
        assert isinstance(conn, PgConn)
        return conn.raw.pipeline()

    def close(self) -> None:
        self._closed = True
        for stop in self._listeners:
            stop.set()
        with self._conns_lock:
            conns, self._conns, self._shared, self._idle = self._conns, [], None, []
        for raw in conns:
            try:
                raw.close()
            except psycopg.Error:  # pragma: no cover - already gone
                pass

    def register_items(self, ids: Iterable[str]) -> int:
        known = check_ids(ids, "ids", allow_empty=True)
        added = 0
        with self._write() as c:
            for start in range(0, len(known), 50_000):
                cur = c.raw.execute("INSERT INTO items (id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (known[start : start + 50_000],))
                added += max(cur.rowcount, 0)
        return added

    # -- pushed versions -------------------------------------------------------------------------
    def listen(self, on_version: Callable[[int], None]) -> Callable[[], None]:
        """Call ``on_version`` with each new event id any writer commits, from a background thread
        with its own connection (reconnecting after a dropped one); returns the stop function."""
        stop = threading.Event()
        self._listeners.append(stop)

        def run() -> None:
            delay = 0.5
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="corral-listen") as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        delay = 0.5
                        on_version(int(self.version()))  # anything committed while we were away
                        while not stop.is_set():
                            for note in conn.notifies(timeout=1.0):
                                try:
                                    on_version(int(note.payload))
                                except ValueError:
                                    logger.warning("label store %s: odd notification %r on %s", self.location, note.payload[:40], CHANNEL)
                except (psycopg.Error, LabelStoreUnavailable) as e:
                    if stop.is_set():
                        return
                    logger.warning("label store %s: listening for new versions failed (%s); retrying in %.1fs", self.location, " ".join(str(e).split())[:200], delay)
                    stop.wait(delay)
                    delay = min(delay * 2, 10.0)

        threading.Thread(target=run, name="corral-labels-listen", daemon=True).start()
        return stop.set
