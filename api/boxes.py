"""Detector boxes a curator revises: the state the photo view shows, and each revision as an event.

The truth is the label store: every delete, adjust and draw is one undoable ``boxes`` event
(:mod:`corral.storage.boxes` says what its payload holds). :class:`BoxService` derives the boxes
of every photo from the workspace's crop items plus the revisions in force, caches that per store
version and set of item shards, and tells the map registry which crops are no box now, so they
leave the map (a map view's etag changes with that set, so a viewer never acts through stale
point indices).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from corral.api.errors import ApiError, Conflict, NotFound
from corral.storage.boxes import KIND, BoxError, BoxState, CropIndex, Photo, apply_revisions, check_box, crop_index, revision_payload
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: the smallest box side a curator may draw, unless the embed run used another --min-size
DEFAULT_MIN_SIZE = 40


class BoxService:
    """Box state of one workspace, and the revisions, serialised (one revision at a time)."""

    def __init__(self, workspace: Workspace, labels: Any):
        self.workspace = workspace
        self.labels = labels  # corral.api.labelstate.LabelService
        self._lock = threading.RLock()
        self._cache: tuple[tuple[Any, ...], BoxState, frozenset[str]] | None = None
        self._items_cache: tuple[tuple[Any, ...], Any] | None = None
        self._index_cache: tuple[tuple[Any, ...], CropIndex] | None = None

    # -- state -------------------------------------------------------------------------------
    def _items_stamp(self) -> tuple[Any, ...]:
        out = []
        for es in self.workspace.embedding_sets():
            for p in sorted(es.path.glob("part-*.items.parquet")):
                try:
                    st = p.stat()
                except OSError:
                    continue
                out.append((str(p), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _items(self, stamp: tuple[Any, ...]) -> Any:
        if self._items_cache is None or self._items_cache[0] != stamp:
            self._items_cache = (stamp, self.workspace.items())
        return self._items_cache[1]

    def state(self) -> BoxState:
        """The boxes now (recomputed when the item shards or the revisions in force changed, not on
        every label action)."""
        with self._lock:
            stamp = self._items_stamp()
            index = self._index(stamp)
            revisions = self.labels.store.in_force(KIND) if index.photos else []
            key = (stamp, tuple(e.id for e in revisions))
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
            state = apply_revisions(index, revisions)
            self._cache = (key, state, frozenset(state.hidden()))
            return state

    def _index(self, stamp: tuple[Any, ...]) -> CropIndex:
        if self._index_cache is None or self._index_cache[0] != stamp:
            self._index_cache = (stamp, crop_index(self._items(stamp)))
        return self._index_cache[1]

    def hidden(self) -> frozenset[str]:
        """Crop ids that must not show on a map (deleted, replaced, or added by an undone revision)."""
        self.state()
        assert self._cache is not None
        return self._cache[2]

    def photo(self, photo_id: str) -> Photo:
        p = self.state().photos.get(photo_id)
        if p is None:
            raise NotFound(f"no photo {photo_id!r} with detector boxes in this workspace")
        return p

    def min_size(self) -> int:
        """The ``--min-size`` of the embed run that made the boxes (the smallest side a box may have)."""
        sizes = []
        for es in self.workspace.embedding_sets():
            det = (es.sidecar().get("detection") or {}) if es.sidecar_path.exists() else {}
            if "min_size" in det:
                sizes.append(int(det["min_size"]))
        return min(sizes) if sizes else DEFAULT_MIN_SIZE

    # -- views -------------------------------------------------------------------------------
    def photo_json(self, p: Photo, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
        labels = self.labels.store.item_labels() if labels is None else labels
        boxes = sorted(p.boxes.values(), key=lambda b: (b.bbox[1], b.bbox[0]))
        return {
            "id": p.id,
            "name": p.uri.rsplit("/", 1)[-1],
            "width": p.width,
            "height": p.height,
            "version": p.version,
            "revisions": p.revisions,
            "boxes": [b.json() | {"label": labels.get(b.id)} for b in boxes],
        }

    def photos(self, *, unnamed: bool = False, max_score: float | None = None, offset: int = 0, limit: int = 60) -> dict[str, Any]:
        """Photos with their boxes; ``unnamed``: only those with a box nobody named; ``max_score``:
        only those with a detector box scoring under it."""
        state = self.state()
        labels = self.labels.store.item_labels()
        keep = []
        for p in sorted(state.photos.values(), key=lambda p: p.uri):
            if unnamed and all(b in labels for b in p.boxes):
                continue
            if max_score is not None and not any(b.score is not None and b.score < max_score for b in p.boxes.values()):
                continue
            keep.append(p)
        return {"total": len(keep), "offset": offset, "photos": [self.photo_json(p, labels=labels) for p in keep[offset : offset + limit]]}

    def history(self, photo_id: str) -> list[dict[str, Any]]:
        """Every box revision of the photo, with who, when, and whether it holds (newest first)."""
        store = self.labels.store
        holds = {e.id for e in store.in_force(KIND)}
        out = []
        since = 0
        while True:
            evs = store.events(since=since, limit=10_000)
            for e in evs:
                if e.kind == KIND and e.payload.get("parent") == photo_id:
                    out.append(
                        {"event_id": e.id, "user": e.user, "at": e.at, "op": e.payload.get("op"), "remove": e.payload.get("remove", []), "add": e.payload.get("add", []), "in_force": e.id in holds}
                    )
                elif e.kind in ("undo", "redo") and any(h["event_id"] == e.payload.get("target") for h in out):
                    out.append({"event_id": e.id, "user": e.user, "at": e.at, "op": e.kind, "target": e.payload.get("target")})
            if len(evs) < 10_000:
                break
            since = evs[-1].id
        return out[::-1]

    # -- revisions ---------------------------------------------------------------------------
    def _check_base(self, p: Photo, base: int | None) -> None:
        if base is not None and int(base) != p.version:
            raise Conflict(f"photo {p.id} was revised meanwhile (its boxes are at revision {p.version}, you saw {base}); reload it and try again")

    def _box(self, p: Photo, crop: str) -> Any:
        b = p.boxes.get(crop)
        if b is None:
            raise NotFound(f"photo {p.id} has no box {crop!r} now (deleted or replaced meanwhile?)")
        return b

    def _checked(self, p: Photo, bbox: Any, clip: bool) -> tuple[int, int, int, int]:
        try:
            return check_box(bbox, width=p.width, height=p.height, min_size=self.min_size(), clip=clip)
        except BoxError as e:
            raise ApiError(str(e), status=422) from None

    def delete(self, photo_id: str, crop: str, *, user: str, base: int | None) -> dict[str, Any]:
        """The box is not an object: the crop leaves the map and loses its label, and is excluded from
        that label (the recognition index builds negatives from exclusions)."""
        with self._lock:
            p = self.photo(photo_id)
            self._check_base(p, base)
            b = self._box(p, crop)
            label = self.labels.store.item_labels().get(crop)
            payload = revision_payload("delete", p.id, remove=[crop]) | {"label": label, "bbox": list(b.bbox)}
            # a named box that is no object stays a negative of its label for the recognition index
            res = self.labels.store.revise(KIND, payload, user=user, relabel={crop: None} if label else None, exclude={crop: label} if label else None)
            return self._answer(p.id, res)

    def adjust(self, photo_id: str, crop: str, bbox: Any, *, user: str, base: int | None, clip: bool, data: bytes) -> dict[str, Any]:
        """The box moves: the crop is cut again, embedded, placed, and carries the old crop's label."""
        with self._lock:
            p = self.photo(photo_id)
            self._check_base(p, base)
            old = self._box(p, crop)
            box = self._checked(p, bbox, clip)
            if box == old.bbox:
                raise ApiError(f"box {crop} is already at {list(box)}; nothing to adjust", status=422)
            if any(b.bbox == box for b in p.boxes.values()):
                raise ApiError(f"photo {p.id} already has a box at {list(box)}", status=422)
            cut = self._cut(p, data, box, origin="adjusted", replaces=crop)
            label = self.labels.store.item_labels().get(crop)
            relabel = {cut.id: label, crop: None} if label else None
            payload = revision_payload("adjust", p.id, remove=[crop], add=[{"id": cut.id, "bbox": list(box), "from": crop}]) | {"label": label, "before": list(old.bbox)}
            res = self.labels.store.revise(KIND, payload, user=user, new_items=[cut.id], relabel=relabel)
            return self._answer(p.id, res, box=cut.id)

    def draw(self, photo_id: str, bbox: Any, *, user: str, base: int | None, clip: bool, data: bytes, label: str | None) -> dict[str, Any]:
        """A box the detector missed: cut, embedded, placed; named at once when ``label`` is given."""
        with self._lock:
            p = self.photo(photo_id)
            self._check_base(p, base)
            box = self._checked(p, bbox, clip)
            if any(b.bbox == box for b in p.boxes.values()):
                raise ApiError(f"photo {p.id} already has a box at {list(box)}", status=422)
            cut = self._cut(p, data, box, origin="drawn")
            payload = revision_payload("draw", p.id, add=[{"id": cut.id, "bbox": list(box), "from": None}]) | {"label": label}
            res = self.labels.store.revise(KIND, payload, user=user, new_items=[cut.id], relabel={cut.id: label} if label else None)
            return self._answer(p.id, res, box=cut.id)

    def _cut(self, p: Photo, data: bytes, box: tuple[int, int, int, int], *, origin: str, replaces: str | None = None) -> Any:
        """Cut, embed, write and place the box; a server that cannot (the set's embedder or its
        weights missing here, a map without its clustering state) answers 503 and changes nothing."""
        from corral.pipeline.boxcut import cut_box
        from corral.pipeline.decode import SkipItem
        from corral.pipeline.weights import WeightsNotFound
        from corral.storage.workspace import WorkspaceError

        try:
            return cut_box(self.workspace, parent=self._parent_row(p), data=data, bbox=box, known=self._known(), origin=origin, replaces=replaces)
        except SkipItem as e:
            raise ApiError(f"photo {p.id} does not decode now ({e.reason}), so its boxes are left as they are", status=410) from None
        except (WeightsNotFound, WorkspaceError, ValueError) as e:
            raise ApiError(f"the box cannot be embedded on this server: {e}", status=503) from None

    def _parent_row(self, p: Photo) -> dict[str, Any]:
        return {"id": p.id, "uri": p.uri, "width": p.width, "height": p.height}

    def _known(self) -> set[str]:
        items = self._items(self._items_stamp())
        return set(items.column("id").to_pylist()) if items.num_rows else set()

    def _answer(self, photo_id: str, res: Any, *, box: str | None = None) -> dict[str, Any]:
        p = self.photo(photo_id)
        out = {"event_id": int(res.event_id), "version": int(res.version), "photo": self.photo_json(p), "warnings": list(res.warnings or [])}
        if box is not None:
            out["box"] = box
        return out

    # -- a name for a new box ----------------------------------------------------------------
    def suggest(self, crop: str, recognizer: Any | None) -> dict[str, Any] | None:
        """A name for ``crop`` from the recognition index when there is one, else from the nearest
        named box (cosine similarity of their vectors); None when nothing is named yet."""
        from corral.storage.index_build import read_vectors

        state = self.state()
        box = state.box(crop)
        if box is None:
            return None
        labels = self.labels.store.item_labels()
        for es in self.workspace.embedding_sets():
            ids, vecs = read_vectors(es, {crop})
            if not ids:
                continue
            if recognizer is not None:
                d = recognizer.recognize(vecs)[0]
                if d.label is not None:
                    return {"label": d.label, "score": round(float(d.score), 4), "source": "index"}
            named = {b for p in state.photos.values() for b in p.boxes if b in labels and b != crop}
            if not named:
                return None
            nids, nvecs = read_vectors(es, named)
            if not nids:
                return None
            sims = np.asarray(nvecs, np.float32) @ np.asarray(vecs[0], np.float32)
            j = int(np.argmax(sims))
            return {"label": labels[nids[j]], "score": round(float(sims[j]), 4), "source": "nearest named box"}
        return None
