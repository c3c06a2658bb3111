"""Labels as the viewer sees them: one label id and one state byte per point of a map.

The label store (``corral.storage.labels``) is the truth: every action is one of its events, durable
before it returns. This module keeps, per map, the current label of each point as an array,
updates it from each action's ``changed`` items, and remembers which points changed at which
store version, so a viewer that knows version ``v`` gets just the points changed since (its own
actions and everyone else's). When the store moved on without us (another server process, the
CLI), the arrays are rebuilt from the store and compared.

A store that pushes its new versions (PostgreSQL's NOTIFY, from any server on the database) wakes
the viewers' event streams at once (:meth:`LabelService.wait_for_change`); on SQLite they poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corral.api.binpack import gzip_bytes, pack
from corral.api.mapdata import MapView
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: state byte bits
EXCLUDED = 1
#: versions of change history kept per map (older viewers reload the whole label array)
HISTORY = 512


def label_json(info: Any) -> dict[str, Any]:
    return {
        "id": int(info.id),
        "name": info.name,
        "count": int(info.count),
        "aliases": list(getattr(info, "aliases", []) or []),
        "created_by": getattr(info, "created_by", None),
    }


@dataclass
class MapLabels:
    """The label array of one map view at one store version."""

    etag: str
    version: int
    label: np.ndarray  # uint32 label id per point, 0 = unlabelled
    state: np.ndarray  # uint8 bits per point (EXCLUDED)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # (from, to, point indices)

    base: int = -1  # oldest version the history can answer from (set on creation)

    def __post_init__(self) -> None:
        if self.base < 0:
            self.base = self.version

    def record(self, new_version: int, idx: np.ndarray) -> None:
        """Note that points ``idx`` changed between the current version and ``new_version``."""
        if len(self.history) == self.history.maxlen:
            self.base = self.history[1][0] if len(self.history) > 1 else self.version
        self.history.append((self.version, new_version, np.asarray(idx, dtype=np.int64)))
        self.version = new_version

    def changes_since(self, since: int | None) -> dict[str, Any] | None:
        """Points changed after version ``since`` with their values now; None when too old to say."""
        if since is None or since > self.version or since < self.base:
            return None
        parts = [i for _, to_v, i in self.history if to_v > since]
        idx = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        return {"idx": idx.tolist(), "label": self.label[idx].tolist(), "state": self.state[idx].tolist()}


class LabelService:
    """The workspace's label store plus the per-map arrays the viewer needs; thread-safe."""

    def __init__(self, workspace: Workspace, *, labels: str | None = None):
        self.workspace = workspace
        self.labels_location = labels  # None: $CORRAL_LABELS, else the workspace's labels.sqlite
        self._lock = threading.RLock()
        self._store: Any = None
        self._maps: dict[str, MapLabels] = {}
        self._stop_listening: Callable[[], None] | None = None
        self._pushed = False  # the store pushes new versions (else readers poll)
        self._latest = 0  # the newest version pushed
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiters_lock = threading.Lock()

    @property
    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from corral.storage.labels import LabelStore

                self._store = LabelStore.open(self.workspace, labels=self.labels_location)
                self._stop_listening = self._store.listen(self._on_version)
                self._pushed = self._stop_listening is not None
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._stop_listening is not None:
                self._stop_listening()
                self._stop_listening = None
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- pushed versions ---------------------------------------------------------------------
    def _on_version(self, version: int) -> None:
        """A writer somewhere committed event ``version``: wake every waiting event stream."""
        with self._waiters_lock:
            self._latest = max(self._latest, version)
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop has closed
                pass

    async def wait_for_change(self, timeout: float, *, seen: int | None = None) -> None:
        """Return when the store may have a version newer than ``seen``: at once when one is (or
        was, since the caller read ``seen``) pushed, else after ``timeout`` seconds (the poll)."""
        if not self._pushed:
            await asyncio.sleep(timeout)
            return
        key = (asyncio.get_running_loop(), asyncio.Event())
        with self._waiters_lock:
            missed = seen is not None and self._latest > seen  # pushed between the caller's read and now
            if not missed:
                self._waiters.add(key)
        if missed:
            await asyncio.sleep(0.05)  # (a store replaced by an older copy must not spin this)
            return
        try:
            await asyncio.wait_for(key[1].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._waiters_lock:
                self._waiters.discard(key)

    # -- reading -----------------------------------------------------------------------------
    def labels(self) -> list[dict[str, Any]]:
        with self._lock:
            return [label_json(i) for i in self.store.labels()]

    def events(self, *, since: int, limit: int) -> tuple[list[Any], int]:
        """A page of the store's events after ``since``, and the store's version."""
        with self._lock:
            return self.store.events(since=since, limit=limit), int(self.store.version())

    def _rebuild(self, view: MapView) -> tuple[np.ndarray, np.ndarray, int]:
        store = self.store
        version = int(store.version())
        by_name = {i.name: int(i.id) for i in store.labels()}
        label = np.zeros(view.n, dtype=np.uint32)
        state = np.zeros(view.n, dtype=np.uint8)
        items = store.item_labels()
        if items:
            idx = view.index_of(list(items.keys()))
            vals = np.fromiter((by_name.get(n, 0) for n in items.values()), dtype=np.uint32, count=len(items))
            ok = idx >= 0
            label[idx[ok]] = vals[ok]
        excl = store.exclusions()
        if excl:
            idx = view.index_of(list(excl.keys()))
            idx = idx[idx >= 0]
            state[idx[label[idx] == 0]] = EXCLUDED
        return label, state, version

    def for_map(self, view: MapView) -> MapLabels:
        """The map's label arrays, brought up to the store's current version."""
        with self._lock:
            ml = self._maps.get(view.name)
            if ml is None or ml.etag != view.etag:
                label, state, version = self._rebuild(view)
                ml = MapLabels(view.etag, version, label, state)
                self._maps[view.name] = ml
                return ml
            if int(self.store.version()) != ml.version:
                self._catch_up(view, ml)
            return ml

    def _catch_up(self, view: MapView, ml: MapLabels) -> None:
        label, state, version = self._rebuild(view)
        changed = np.flatnonzero((label != ml.label) | (state != ml.state))
        ml.label, ml.state = label, state
        ml.record(version, changed)

    def blob(self, view: MapView) -> tuple[bytes, int]:
        """The label arrays of a map, packed and gzipped; with the version they show."""
        with self._lock:
            ml = self.for_map(view)
            top = int(ml.label.max()) if view.n else 0
            lab = ml.label.astype(np.uint16) if top < 65535 else ml.label
            header = {"kind": "labels", "map": view.name, "etag": view.etag, "version": ml.version, "labels": self.labels()}
            raw = pack(header, [("label", lab), ("state", ml.state)])
            version = ml.version
        return gzip_bytes(raw, level=1), version

    def changes(self, view: MapView, since: int | None) -> dict[str, Any]:
        """What changed on this map after version ``since`` (``full`` when the client must reload)."""
        with self._lock:
            ml = self.for_map(view)
            ch = ml.changes_since(since)
            # the etag tells a viewer whose point indices are of an older view (crops left or joined the map) to reload
            out: dict[str, Any] = {"version": ml.version, "full": ch is None, "etag": view.etag}
            if ch is not None:
                out["changes"] = ch
                if ch["idx"] or since != ml.version:
                    out["labels"] = self.labels()
            return out

    # -- writing -----------------------------------------------------------------------------
    def act(self, view: MapView, action: Callable[[Any], Any], *, since: int | None) -> dict[str, Any]:
        """Run one label-store action and answer with the map's new state since ``since``."""
        with self._lock:
            ml = self.for_map(view)
            before = ml.version
            # items embedded or mapped since the store opened (the viewer's own jobs) become known
            self.store.sync_workspace(self.workspace)
            res = action(self.store)
            if int(res.version) == before + 1 or int(res.version) == before:
                self._apply(view, ml, res)
            else:  # someone else wrote in between: rebuild and diff
                self._catch_up(view, ml)
            out = self.changes(view, since)
            out.update(
                {
                    "event_id": int(res.event_id),
                    "kind": res.kind,
                    "changed_items": len(res.changed),
                    "conflicts": int(getattr(res, "conflicts", 0) or 0),
                    "warnings": list(getattr(res, "warnings", None) or []),
                    "labels": [label_json(i) for i in res.labels],
                }
            )
            return out

    def _apply(self, view: MapView, ml: MapLabels, res: Any) -> None:
        """Labels from the action's ``changed`` items; exclusion marks re-read whole (they are few,
        and undo can change them without changing a label)."""
        by_name = {i.name: int(i.id) for i in res.labels}
        ids = list(res.changed.keys())
        idx = view.index_of(ids)
        vals = np.fromiter((by_name.get(n, 0) if n is not None else 0 for n in res.changed.values()), dtype=np.uint32, count=len(ids))
        ok = idx >= 0
        idx, vals = idx[ok], vals[ok]
        ml.label[idx] = vals
        state = np.zeros(view.n, dtype=np.uint8)
        excl = self.store.exclusions()
        if excl:
            ex = view.index_of(list(excl.keys()))
            ex = ex[ex >= 0]
            state[ex[ml.label[ex] == 0]] = EXCLUDED
        flipped = np.flatnonzero(state != ml.state)
        ml.state = state
        ml.record(int(res.version), np.union1d(idx, flipped))
