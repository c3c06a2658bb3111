"""A detector's boxes as curators revised them: deleted, adjusted and drawn boxes.

A detect run leaves crop items (:mod:`corral.storage.crops`). A curator revises them box by box,
and each revision is one undoable event of the label store, of kind ``boxes``, whose payload says
what changed::

    {"op": "delete" | "adjust" | "draw", "parent": <photo id>,
     "remove": [<crop id>, ...], "add": [{"id", "bbox": [x, y, w, h], "from": <crop id> | null}]}

The boxes of a photo now are the detector's crops, then every revision still in force (not
undone) applied in order: its ``remove`` ids leave, its ``add`` boxes come. Crops a revision cut
(adjusted and drawn boxes) are items of the embedding set like the detector's, with ``meta``
``{"detector": "curator", "origin": "adjusted" | "drawn"}``; they are boxes only while the
revision that added them holds. A deleted crop stays an item (its vector is a negative: "not an
object") but is no box and leaves the map.

This module reads plain tables and event payloads and imports none of Corral's other packages
beyond storage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

#: the event kind of box revisions
KIND = "boxes"
#: the ``detector`` of boxes a curator made
CURATOR = "curator"
OPS = ("delete", "adjust", "draw")


class BoxError(ValueError):
    """A box that cannot be used (outside the photo, too small, not a number); nothing was written."""


@dataclass(frozen=True)
class Box:
    id: str  # the crop item's id
    parent: str  # the photo's item id
    bbox: tuple[float, float, float, float]  # x, y, w, h in the photo's pixels
    detector: str  # the detector that found it, or "curator"
    score: float | None  # the detector's score; None for a box a curator made
    origin: str  # "detector", "adjusted" or "drawn"
    replaces: str | None = None  # for an adjusted box: the crop it replaced

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "bbox": [int(v) if float(v).is_integer() else v for v in self.bbox], "detector": self.detector, "score": self.score, "origin": self.origin, "replaces": self.replaces}


@dataclass
class Photo:
    id: str
    uri: str
    width: int
    height: int
    boxes: dict[str, Box] = field(default_factory=dict)  # current boxes by crop id
    found: list[Box] = field(default_factory=list)  # the detector's own boxes, as it found them
    version: int = 0  # the newest revision in force on this photo (0: none)
    revisions: int = 0  # revisions in force on this photo


@dataclass
class BoxState:
    photos: dict[str, Photo]  # photo id -> photo (only photos a detector looked at)
    deleted: dict[str, Box]  # crops deleted as "not an object": the negatives
    version: int  # the newest revision event in force (0: none)

    def hidden(self) -> set[str]:
        """Crop ids that are no box now (deleted, replaced, or added by an undone revision)."""
        current = {b for p in self.photos.values() for b in p.boxes}
        every = {b.id for p in self.photos.values() for b in p.found} | self._made
        return every - current

    _made: set[str] = field(default_factory=set)  # crops revisions cut (in force or not)

    def box(self, crop_id: str) -> Box | None:
        for p in self.photos.values():
            if crop_id in p.boxes:
                return p.boxes[crop_id]
        return None


def _meta(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        m = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def _bbox(text: Any) -> tuple[float, float, float, float] | None:
    try:
        v = json.loads(text) if isinstance(text, str) else list(text)
        x, y, w, h = (float(a) for a in v)
    except (TypeError, ValueError):
        return None
    return (x, y, w, h)


@dataclass(frozen=True)
class CropIndex:
    """What the items table says about boxes, before any revision (made once per set of shards)."""

    photos: dict[str, Photo]  # photo id -> photo with the detector's boxes
    made: dict[str, Box]  # crops that revisions cut, by id


def crop_index(items: pa.Table) -> CropIndex:
    """The detector's boxes and the revisions' crops listed in an items table (``Workspace.items()``)."""
    import pyarrow.compute as pc

    photos: dict[str, Photo] = {}
    made: dict[str, Box] = {}
    if not items.num_rows or "parent_id" not in items.column_names:
        return CropIndex(photos, made)
    ok = items.filter(pc.equal(items.column("status"), "ok"))
    has_parent = pc.and_(pc.is_valid(ok.column("parent_id")), pc.not_equal(ok.column("parent_id"), ""))
    crops = ok.filter(has_parent).to_pylist()
    if not crops:
        return CropIndex(photos, made)
    wanted = pa.array(sorted({r["parent_id"] for r in crops}), pa.string())
    parents = {r["id"]: r for r in ok.filter(pc.is_in(ok.column("id"), value_set=wanted)).select(["id", "uri", "width", "height"]).to_pylist()}
    for r in crops:
        parent = r["parent_id"]
        pr = parents.get(parent)
        bbox = _bbox(r.get("bbox"))
        if pr is None or bbox is None:
            continue
        photo = photos.get(parent)
        if photo is None:
            photo = photos[parent] = Photo(parent, pr["uri"], int(pr.get("width") or 0), int(pr.get("height") or 0))
        meta = _meta(r.get("meta"))
        origin = str(meta.get("origin") or "detector")
        score = meta.get("score")
        box = Box(r["id"], parent, bbox, str(meta.get("detector") or ""), None if score is None else float(score), origin, meta.get("replaces"))
        if origin == "detector":
            photo.found.append(box)
            photo.boxes[box.id] = box
        else:
            made[box.id] = box
    return CropIndex(photos, made)


def apply_revisions(index: CropIndex, revisions: Iterable[Any]) -> BoxState:
    """The boxes of every photo after ``revisions``: the ``boxes`` events in force, oldest first
    (``LabelStore.in_force("boxes")``; anything with ``id`` and ``payload``). ``index`` is not changed."""
    photos = {k: Photo(p.id, p.uri, p.width, p.height, dict(p.boxes), p.found) for k, p in index.photos.items()}
    made = index.made
    deleted: dict[str, Box] = {}
    version = 0
    for ev in revisions:
        p = ev.payload
        photo = photos.get(p.get("parent", ""))
        if photo is None:
            continue
        for cid in p.get("remove", []):
            gone = photo.boxes.pop(cid, None)
            if gone is not None and p.get("op") == "delete":
                deleted[cid] = gone
        for a in p.get("add", []):
            known = made.get(a["id"])
            added = _bbox(a.get("bbox"))
            if known is None and added is None:
                continue
            origin = "adjusted" if a.get("from") else "drawn"
            photo.boxes[a["id"]] = known or Box(a["id"], photo.id, added, CURATOR, None, origin, a.get("from"))  # type: ignore[arg-type]
        photo.version = int(ev.id)
        photo.revisions += 1
        version = max(version, int(ev.id))
    state = BoxState(photos, deleted, version)
    state._made = set(made)
    return state


def box_state(items: pa.Table, revisions: Iterable[Any]) -> BoxState:
    """The boxes of every photo now: :func:`crop_index` of ``items``, then :func:`apply_revisions`."""
    return apply_revisions(crop_index(items), revisions)


def check_box(bbox: Any, *, width: int, height: int, min_size: int, clip: bool = True) -> tuple[int, int, int, int]:
    """A curator's box as whole pixels inside the photo, or :class:`BoxError` saying why not.

    A box that reaches past the photo's edge is cut down to it (``clip``) or refused; a box with
    no part inside, or with a side under ``min_size`` pixels (after clipping), is refused.
    """
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise BoxError(f"bbox={bbox!r:.80}: expected four numbers [x, y, w, h] in the photo's pixels") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise BoxError(f"bbox={[x, y, w, h]}: expected finite numbers with a positive width and height")
    x0, y0, x1, y1 = x, y, x + w, y + h
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1:
        raise BoxError(f"bbox={[x, y, w, h]} lies outside the {width} x {height} photo")
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1) and not clip:
        raise BoxError(f"bbox={[x, y, w, h]} reaches past the {width} x {height} photo; draw it inside, or send clip=true to cut it to the edge")
    ix0, iy0 = int(math.floor(cx0)), int(math.floor(cy0))
    ix1, iy1 = int(math.ceil(cx1)), int(math.ceil(cy1))
    if min(ix1 - ix0, iy1 - iy0) < min_size:
        raise BoxError(f"box {[ix0, iy0, ix1 - ix0, iy1 - iy0]} is {ix1 - ix0} x {iy1 - iy0} px; boxes smaller than --min-size {min_size} px on a side are refused")
    return (ix0, iy0, ix1 - ix0, iy1 - iy0)


def iou(a: Iterable[float], b: Iterable[float]) -> float:
    """Intersection over union of two ``x, y, w, h`` boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter) if inter > 0 else 0.0


def detector_report(state: BoxState, *, min_iou: float = 0.5) -> list[dict[str, Any]]:
    """Per detector, its precision and recall against the revised boxes of the photos a curator revised.

    Only photos with at least one revision in force count (a photo nobody looked at says nothing
    about the detector). On those, the boxes now are the truth: a detector box matches a box now
    when their IoU is at least ``min_iou`` (greedy, best pairs first).
    """
    per: dict[str, dict[str, int]] = {}
    for photo in state.photos.values():
        if not photo.revisions:
            continue
        truth = [b.bbox for b in photo.boxes.values()]
        by_det: dict[str, list[Box]] = {}
        for b in photo.found:
            by_det.setdefault(b.detector, []).append(b)
        for det, found in by_det.items():
            pairs = sorted(((iou(f.bbox, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
            used_f: set[int] = set()
            used_t: set[int] = set()
            for v, i, j in pairs:
                if v < min_iou:
                    break
                if i not in used_f and j not in used_t:
                    used_f.add(i)
                    used_t.add(j)
            c = per.setdefault(det, {"photos": 0, "found": 0, "true": 0, "matched": 0})
            c["photos"] += 1
            c["found"] += len(found)
            c["true"] += len(truth)
            c["matched"] += len(used_f)
    out = []
    for det, c in sorted(per.items()):
        out.append(
            {
                "detector": det,
                "photos_revised": c["photos"],
                "boxes_found": c["found"],
                "boxes_now": c["true"],
                "matched": c["matched"],
                "precision": round(c["matched"] / c["found"], 4) if c["found"] else None,
                "recall": round(c["matched"] / c["true"], 4) if c["true"] else None,
                "min_iou": min_iou,
            }
        )
    return out


def revision_payload(op: str, parent: str, *, remove: Iterable[str] = (), add: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The payload of one ``boxes`` event."""
    if op not in OPS:
        raise BoxError(f"op={op!r}: expected one of {', '.join(OPS)}")
    return {"op": op, "parent": parent, "remove": list(remove), "add": [dict(a) for a in add]}
