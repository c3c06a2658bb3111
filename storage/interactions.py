"""Review byproducts: what a curator did with every tile of a review page, kept for good.

A review page shows one label and a page of candidate items; the curator clicks the ones that do
not match and submits. Beside the label action itself (one event of the label store), the page
records per tile where it sat on the page, when its thumbnail appeared, every time the pointer
entered and left it, every click with its position, the decision and how long it took. Those
traces say which items were hard and how carefully a curator looked, which the label events
alone cannot.

One SQLite file in the workspace (``interactions.sqlite``, WAL, fsynced on every page) holds
three append-only tables: ``pages`` (who, which label, when, which label-store event the submit
made), ``tiles`` (one row per tile per page) and ``passes`` (a proposal of what to name next that
a curator passed over: its items, who, when, how; the learning loop offers such proposals after
the others, for every curator of the map)::

    store = InteractionStore.open(Workspace("ws"))
    store.record_page(page, curator="ana")        # a ReviewPage; raises InteractionError on bad input
    store.rows(curator="ana")                     # one flat dict per tile, pages joined in
    store.record_pass("digits", ids, curator="ana", how="skip", kind="group")
    store.passes("digits")                        # the item ids of each pass, newest first
    store.last_pass("digits")                     # the latest pass's id (a cache key)

Times inside a page are milliseconds since the page was shown (the browser's monotonic clock);
the page's own ``shown_at`` and ``submitted_at`` are Unix seconds. Every list has a cap, so a
hostile or buggy client cannot make one page enormous.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from corral.storage.events import immediate

if TYPE_CHECKING:
    from corral.storage.workspace import Workspace

__all__ = ["InteractionError", "DuplicatePage", "ReviewPage", "ReviewTile", "InteractionStore", "FILE_NAME", "LIMITS", "ROW_COLUMNS", "PASS_COLUMNS", "PASS_HOW", "PASS_KINDS"]

FILE_NAME = "interactions.sqlite"

#: Caps on one page's lists and values.
LIMITS = {
    "tiles": 200,  # tiles per page (the page shows 48)
    "hovers": 500,  # hover (enter, leave) pairs per tile
    "clicks": 200,  # clicks per tile
    "ms": 86_400_000,  # any time inside a page: at most a day after it was shown
    "grid": 10_000,  # row, col and order
    "text": 200,  # label, map name, source
    "pass_items": 200_000,  # items of one passed-over proposal
}
#: How a proposal was passed over: ] went past it, or another selection replaced it.
PASS_HOW = ("skip", "replaced")
#: What was passed over: a regrouped group, or a map cluster (suggested groups are the model's).
PASS_KINDS = ("group", "cluster")
#: The columns of :meth:`InteractionStore.pass_rows`, in order (the export's header).
PASS_COLUMNS = ("pass_id", "map", "curator", "how", "kind", "labels_version", "at", "item_count", "items")
#: The passes a learning round reads back per map, newest first.
PASSES_READ = 500
DECISIONS = ("match", "not", "left")  # named; excluded as not this label; left out by a cut, no verdict
_PAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: The columns of :meth:`InteractionStore.rows`, in order (the export's header).
ROW_COLUMNS = (
    "page_id",
    "curator",
    "label",
    "map",
    "source",
    "page_shown_at",
    "submitted_at",
    "event_id",
    "labels_version",
    "item_id",
    "point_index",
    "row",
    "col",
    "order",
    "shown_ms",
    "hovers",
    "hover_count",
    "hover_ms",
    "clicks",
    "click_count",
    "decision",
    "decided_ms",
    "time_to_decision_ms",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    page_id TEXT PRIMARY KEY,
    curator TEXT NOT NULL,
    label TEXT NOT NULL,
    map TEXT NOT NULL,
    source TEXT NOT NULL,
    shown_at REAL NOT NULL,
    submitted_at REAL NOT NULL,
    received_at REAL NOT NULL,
    event_id INTEGER,
    labels_version INTEGER,
    tile_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pages_curator ON pages (curator, received_at);
CREATE TABLE IF NOT EXISTS tiles (
    page_id TEXT NOT NULL REFERENCES pages (page_id),
    ord INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    point_index INTEGER,
    row INTEGER NOT NULL,
    col INTEGER NOT NULL,
    shown_ms REAL,
    hovers TEXT NOT NULL,
    clicks TEXT NOT NULL,
    decision TEXT NOT NULL,
    decided_ms REAL,
    PRIMARY KEY (page_id, ord)
);
CREATE INDEX IF NOT EXISTS tiles_item ON tiles (item_id);
CREATE TABLE IF NOT EXISTS passes (
    pass_id INTEGER PRIMARY KEY AUTOINCREMENT,
    map TEXT NOT NULL,
    curator TEXT NOT NULL,
    how TEXT NOT NULL,
    kind TEXT NOT NULL,
    labels_version INTEGER,
    at REAL NOT NULL,
    item_count INTEGER NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passes_map ON passes (map, pass_id);
"""


class InteractionError(ValueError):
    """A review page that cannot be stored as sent (the message names the field and the limit)."""


class DuplicatePage(InteractionError):
    """A page id that is already stored (pages are written once)."""


@dataclass(frozen=True)
class ReviewTile:
    """One tile of a review page.

    Args:
        item_id: the item shown.
        row, col: where the tile sat in the grid; ``order``: its place in reading order.
        decision: ``"match"`` (left alone) or ``"not"`` (clicked as not this label).
        shown_ms: when its thumbnail appeared (ms after the page was shown), or None.
        hovers: (enter, leave) times in ms; leave is None when the pointer never left.
        clicks: (t, x, y): time in ms and position in CSS pixels inside the tile.
        decided_ms: when the final decision was made (the last click, or the submit).
        point_index: the item's point on the map the page was built from.
    """

    item_id: str
    row: int
    col: int
    order: int
    decision: str
    shown_ms: float | None = None
    hovers: tuple[tuple[float, float | None], ...] = ()
    clicks: tuple[tuple[float, float, float], ...] = ()
    decided_ms: float | None = None
    point_index: int | None = None


@dataclass(frozen=True)
class ReviewPage:
    """A submitted review page: one label, its tiles, and the label-store event it produced."""

    page_id: str
    label: str
    map: str
    source: str  # where the candidates came from: "suggested" (the model's group), "likely" (its likeliest items) or "members"
    shown_at: float  # Unix seconds
    submitted_at: float  # Unix seconds
    tiles: tuple[ReviewTile, ...] = field(default_factory=tuple)
    event_id: int | None = None
    labels_version: int | None = None


@overload
def _ms(value: Any, what: str, *, optional: Literal[False] = False) -> float: ...
@overload
def _ms(value: Any, what: str, *, optional: bool) -> float | None: ...
def _ms(value: Any, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= LIMITS["ms"]:
        raise InteractionError(f"{what}={value!r}: expected milliseconds from 0 to {LIMITS['ms']:,} after the page was shown")
    return float(value)


def _int(value: Any, what: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise InteractionError(f"{what}={value!r}: expected an integer from 0 to {hi:,}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > LIMITS["text"]:
        raise InteractionError(f"{what}={value!r}: expected a non-empty text of at most {LIMITS['text']} characters")
    return value


def _check_tile(t: ReviewTile, k: int) -> tuple[Any, ...]:
    w = f"tiles[{k}]"
    if not isinstance(t.item_id, str) or not _ITEM_ID.match(t.item_id):
        raise InteractionError(f"{w}.item_id={t.item_id!r}: expected an item id")
    row, col, order = (_int(getattr(t, a), f"{w}.{a}", LIMITS["grid"]) for a in ("row", "col", "order"))
    if t.decision not in DECISIONS:
        raise InteractionError(f"{w}.decision={t.decision!r}: expected one of {', '.join(DECISIONS)}")
    if len(t.hovers) > LIMITS["hovers"]:
        raise InteractionError(f"{w}.hovers: {len(t.hovers)} entries, at most {LIMITS['hovers']} allowed")
    if len(t.clicks) > LIMITS["clicks"]:
        raise InteractionError(f"{w}.clicks: {len(t.clicks)} entries, at most {LIMITS['clicks']} allowed")
    hovers = []
    for j, h in enumerate(t.hovers):
        if len(h) != 2:
            raise InteractionError(f"{w}.hovers[{j}]: expected (enter, leave)")
        enter = _ms(h[0], f"{w}.hovers[{j}].enter")
        leave = _ms(h[1], f"{w}.hovers[{j}].leave", optional=True)
        if leave is not None and leave < enter:
            raise InteractionError(f"{w}.hovers[{j}]: leave {leave} is before enter {enter}")
        hovers.append([enter, leave])
    clicks = []
    for j, c in enumerate(t.clicks):
        if len(c) != 3:
            raise InteractionError(f"{w}.clicks[{j}]: expected (t, x, y)")
        x, y = c[1], c[2]
        for name, v in (("x", x), ("y", y)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 100_000:
                raise InteractionError(f"{w}.clicks[{j}].{name}={v!r}: expected a position in pixels")
        clicks.append([_ms(c[0], f"{w}.clicks[{j}].t"), float(x), float(y)])
    shown = _ms(t.shown_ms, f"{w}.shown_ms", optional=True)
    decided = _ms(t.decided_ms, f"{w}.decided_ms", optional=True)
    point = None if t.point_index is None else _int(t.point_index, f"{w}.point_index", 2**53)
    return (order, t.item_id, point, row, col, shown, json.dumps(hovers), json.dumps(clicks), t.decision, decided)


def check_page(page: ReviewPage) -> list[tuple[Any, ...]]:
    """Validate a page before anything is written; returns its tile rows (without the page id)."""
    if not isinstance(page.page_id, str) or not _PAGE_ID.match(page.page_id):
        raise InteractionError(f"page_id={page.page_id!r}: expected 1-64 letters, digits, '_' or '-'")
    for what in ("label", "map", "source"):
        _text(getattr(page, what), what)
    for what in ("shown_at", "submitted_at"):
        v = getattr(page, what)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise InteractionError(f"{what}={v!r}: expected Unix seconds")
    if page.submitted_at < page.shown_at:
        raise InteractionError(f"submitted_at={page.submitted_at!r} is before shown_at={page.shown_at!r}")
    for what in ("event_id", "labels_version"):
        v = getattr(page, what)
        if v is not None:
            _int(v, what, 2**62)
    if not page.tiles:
        raise InteractionError("tiles: a page needs at least one tile")
    if len(page.tiles) > LIMITS["tiles"]:
        raise InteractionError(f"tiles: {len(page.tiles)} tiles, at most {LIMITS['tiles']} allowed per page")
    rows = [_check_tile(t, k) for k, t in enumerate(page.tiles)]
    orders = [r[0] for r in rows]
    if len(set(orders)) != len(orders):
        raise InteractionError("tiles: two tiles share one order; each tile has its own place on the page")
    return rows


class InteractionStore:
    """The review byproducts of one workspace (append-only; see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self._conn().executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self.close()
            raise InteractionError(f"{self.path} is not a Corral interactions file ({e})") from None

    @classmethod
    def open(cls, workspace: "Workspace | str | os.PathLike[str]", **kwargs: Any) -> "InteractionStore":
        """The store of a workspace (``interactions.sqlite`` in its folder)."""
        from corral.storage.workspace import Workspace

        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        return cls(ws.root / FILE_NAME, **kwargs)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a stored page survives power loss
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._lock, immediate(conn):
            yield conn

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:  # pragma: no cover - already closed
                    pass
            self._conns = []
        self._local = threading.local()

    def __enter__(self) -> "InteractionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_page(self, page: ReviewPage, *, curator: str) -> int:
        """Store one submitted page for ``curator`` in one transaction; returns the tiles stored.

        Raises :class:`InteractionError` on bad input (nothing is written) and
        :class:`DuplicatePage` when the page id is already stored."""
        _text(curator, "curator")
        rows = check_page(page)
        with self._write() as c:
            if c.execute("SELECT 1 FROM pages WHERE page_id = ?", (page.page_id,)).fetchone():
                raise DuplicatePage(f"page {page.page_id!r} is already stored; a page is recorded once")
            c.execute(
                "INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (page.page_id, curator, page.label, page.map, page.source, float(page.shown_at), float(page.submitted_at), time.time(), page.event_id, page.labels_version, len(rows)),
            )
            c.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [(page.page_id, *r) for r in rows])
        return len(rows)

    def record_pass(self, map_name: str, item_ids: Sequence[str], *, curator: str, how: str, kind: str, labels_version: int | None = None) -> int:
        """Store that ``curator`` passed over a proposal of ``map_name`` holding ``item_ids``
        (``how``: :data:`PASS_HOW`; ``kind``: :data:`PASS_KINDS`); returns the pass's id.
        Raises :class:`InteractionError` on bad input (nothing is written)."""
        _text(curator, "curator")
        _text(map_name, "map")
        if how not in PASS_HOW:
            raise InteractionError(f"how: must be one of {', '.join(PASS_HOW)}")
        if kind not in PASS_KINDS:
            raise InteractionError(f"kind: must be one of {', '.join(PASS_KINDS)} (a suggested group is the model's, not passed over)")
        items = list(dict.fromkeys(item_ids))
        if not items:
            raise InteractionError("items: a pass names at least one item")
        if len(items) > LIMITS["pass_items"]:
            raise InteractionError(f"items: at most {LIMITS['pass_items']} per pass")
        bad = next((i for i in items if not isinstance(i, str) or not _ITEM_ID.match(i)), None)
        if bad is not None:
            raise InteractionError(f"items: {str(bad)[:40]!r} is not an item id")
        if labels_version is not None:
            labels_version = _int(labels_version, "labels_version", 2**62)
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO passes (map, curator, how, kind, labels_version, at, item_count, items) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (map_name, curator, how, kind, labels_version, time.time(), len(items), json.dumps(items)),
            )
            return int(cur.lastrowid or 0)

    def passes(self, map_name: str, *, limit: int = PASSES_READ) -> list[list[str]]:
        """The item ids of the latest ``limit`` passes on ``map_name``, newest first."""
        q = "SELECT items FROM passes WHERE map = ? ORDER BY pass_id DESC LIMIT ?"
        return [json.loads(r[0]) for r in self._conn().execute(q, (map_name, int(limit)))]

    def last_pass(self, map_name: str) -> int:
        """The id of the latest pass on ``map_name`` (0 when none): it moves with every new pass."""
        r = self._conn().execute("SELECT MAX(pass_id) FROM passes WHERE map = ?", (map_name,)).fetchone()
        return int(r[0] or 0)

    def pass_rows(self, *, curator: str | None = None) -> list[dict[str, Any]]:
        """Every stored pass (columns :data:`PASS_COLUMNS`: who, when, how, what, how many items), oldest first."""
        q = f"SELECT {', '.join(PASS_COLUMNS)} FROM passes"
        args: list[Any] = []
        if curator is not None:
            q += " WHERE curator = ?"
            args.append(curator)
        return [{**dict(zip(PASS_COLUMNS, r)), "items": json.loads(r[-1])} for r in self._conn().execute(q + " ORDER BY pass_id", args)]

    def pages(self, *, curator: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Stored pages, newest first (optionally one curator's)."""
        q = "SELECT page_id, curator, label, map, source, shown_at, submitted_at, event_id, labels_version, tile_count FROM pages"
        args: list[Any] = []
        if curator is not None:
            q += " WHERE curator = ?"
            args.append(curator)
        q += " ORDER BY received_at DESC, page_id LIMIT ? OFFSET ?"
        cols = ("page_id", "curator", "label", "map", "source", "shown_at", "submitted_at", "event_id", "labels_version", "tile_count")
        return [dict(zip(cols, r)) for r in self._conn().execute(q, [*args, limit, offset])]

    def has_page(self, page_id: str) -> bool:
        """Whether a page with this id is stored."""
        return self._conn().execute("SELECT 1 FROM pages WHERE page_id = ?", (page_id,)).fetchone() is not None

    def count(self) -> tuple[int, int]:
        """(pages, tiles) stored."""
        c = self._conn()
        return int(c.execute("SELECT COUNT(*) FROM pages").fetchone()[0]), int(c.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])

    def rows(self, *, curator: str | None = None, page_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One flat row per tile (columns :data:`ROW_COLUMNS`), pages in the order they arrived.

        ``hover_ms`` sums the closed hovers; ``time_to_decision_ms`` is ``decided_ms`` minus
        ``shown_ms`` (or minus 0 when the thumbnail's appearance was not seen)."""
        q = (
            "SELECT p.page_id, p.curator, p.label, p.map, p.source, p.shown_at, p.submitted_at, p.event_id, p.labels_version,"
            " t.item_id, t.point_index, t.row, t.col, t.ord, t.shown_ms, t.hovers, t.clicks, t.decision, t.decided_ms"
            " FROM tiles t JOIN pages p ON p.page_id = t.page_id"
        )
        where, args = [], []
        if curator is not None:
            where.append("p.curator = ?")
            args.append(curator)
        if page_ids is not None:
            where.append(f"p.page_id IN ({','.join('?' * len(page_ids))})")
            args += list(page_ids)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY p.received_at, p.page_id, t.ord"
        out = []
        for r in self._conn().execute(q, args):
            hovers, clicks = json.loads(r[15]), json.loads(r[16])
            shown, decided = r[14], r[18]
            out.append(
                {
                    "page_id": r[0],
                    "curator": r[1],
                    "label": r[2],
                    "map": r[3],
                    "source": r[4],
                    "page_shown_at": r[5],
                    "submitted_at": r[6],
                    "event_id": r[7],
                    "labels_version": r[8],
                    "item_id": r[9],
                    "point_index": r[10],
                    "row": r[11],
                    "col": r[12],
                    "order": r[13],
                    "shown_ms": shown,
                    "hovers": hovers,
                    "hover_count": len(hovers),
                    "hover_ms": round(sum(b - a for a, b in hovers if b is not None), 3),
                    "clicks": [{"t": t, "x": x, "y": y} for t, x, y in clicks],
                    "click_count": len(clicks),
                    "decision": r[17],
                    "decided_ms": decided,
                    "time_to_decision_ms": None if decided is None else round(decided - (shown or 0.0), 3),
                }
            )
        return out
