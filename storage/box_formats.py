"""The revised boxes in and out: COCO JSON and LabelMe JSON (one file per photo).

Both exports write the boxes as they are now (:mod:`corral.storage.boxes`: the detector's boxes
after every revision in force), so they are the training set a detector can be fine-tuned on.
Both read back through ``corral labels import``: each annotation finds its photo (the
``corral_id`` written beside it, else its file name), then its box (the ``corral_id`` of the box,
else the box of that photo it overlaps most, IoU at least 0.5), and gives that box its label.
An annotation whose box is not in the workspace now is reported as unknown, not imported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corral.storage.boxes import Box, BoxState, Photo, box_state, iou
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: a LabelMe file's format version (the fields written are those of LabelMe 5)
LABELME_VERSION = "5.2.1"
#: the least overlap at which an imported box is taken for a box of the workspace
MATCH_IOU = 0.5


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def current_state(ws: Workspace, revisions: Iterable[Any]) -> BoxState:
    return box_state(ws.items(), revisions)


def coco_doc(state: BoxState, snap: Any, *, title: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A COCO document of the boxes now that carry a label (``snap``: a label store snapshot);
    returns ``(doc, skipped)``. Boxes nobody named are counted as ``unlabelled``."""
    cat_ids = {li.name: li.id for li in snap.labels}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    skipped = {"unlabelled": 0}
    for photo in sorted(state.photos.values(), key=lambda p: p.uri):
        if not photo.boxes:
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": photo.uri, "width": photo.width, "height": photo.height, "corral_id": photo.id})
        for box in sorted(photo.boxes.values(), key=lambda b: (b.bbox[1], b.bbox[0], b.id)):
            st = snap.items.get(box.id)
            if st is None:
                skipped["unlabelled"] += 1
                continue
            x, y, w, h = (_num(v) for v in box.bbox)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[st[0]],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "corral_id": box.id,
                    "corral_origin": box.origin,
                    "score": box.score,
                    "labelled_by": st[1],
                    "labelled_at": _iso(st[2]),
                }
            )
    used = {a["category_id"] for a in annotations}
    doc = {
        "info": {"description": title, "version": str(snap.version), "date_created": _iso(time.time())},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": li.id, "name": li.name, "supercategory": ""} for li in snap.labels if li.id in used],
    }
    return doc, {k: v for k, v in skipped.items() if v}


def labelme_docs(state: BoxState, labels: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """One LabelMe document per photo with boxes: ``(file name, doc)``. A box nobody named has an
    empty label and the flag ``unnamed``."""
    out: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for photo in sorted(state.photos.values(), key=lambda p: p.uri):
        if not photo.boxes:
            continue
        stem = Path(photo.uri.rsplit("/", 1)[-1]).stem or photo.id
        name = f"{stem}.json" if f"{stem}.json" not in used else f"{stem}-{photo.id[:8]}.json"
        used.add(name)
        shapes = []
        for box in sorted(photo.boxes.values(), key=lambda b: (b.bbox[1], b.bbox[0], b.id)):
            x, y, w, h = (_num(v) for v in box.bbox)
            label = labels.get(box.id)
            shapes.append(
                {
                    "label": label or "",
                    "points": [[x, y], [x + w, y + h]],
                    "group_id": None,
                    "description": "",
                    "shape_type": "rectangle",
                    "flags": {"unnamed": label is None, "origin": box.origin},
                    "corral_id": box.id,
                    "score": box.score,
                }
            )
        out.append(
            (
                name,
                {
                    "version": LABELME_VERSION,
                    "flags": {},
                    "shapes": shapes,
                    "imagePath": photo.uri,
                    "imageData": None,
                    "imageHeight": photo.height,
                    "imageWidth": photo.width,
                    "corral_id": photo.id,
                },
            )
        )
    return out


# ------------------------------------------------------------------------------------------
# Import


def is_box_file(path: Path) -> bool:
    """Whether ``path`` is a COCO file, a LabelMe file or a folder of LabelMe files."""
    return path.is_dir() or path.suffix.lower() == ".json"


def _annotations(path: Path) -> list[tuple[dict[str, Any], list[float], str, str | None, Path]]:
    """``(image ref, [x, y, w, h], label, box corral_id, base folder)`` of every box in the file(s)."""
    from corral.storage.events import LabelError

    if not path.exists():
        raise LabelError(f"{path}: no such file or folder")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise LabelError(f"{path}: a folder to import needs LabelMe .json files; it has none")
    out: list[tuple[dict[str, Any], list[float], str, str | None, Path]] = []
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LabelError(f"{f}: not a readable JSON file ({type(e).__name__}: {str(e)[:120]})") from None
        if isinstance(doc, dict) and "annotations" in doc and "images" in doc:  # COCO
            images = {im.get("id"): im for im in doc.get("images") or [] if isinstance(im, dict)}
            cats = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories") or [] if isinstance(c, dict)}
            for a in doc.get("annotations") or []:
                im = images.get(a.get("image_id"))
                bbox = a.get("bbox")
                if im is None or not isinstance(bbox, list) or len(bbox) != 4:
                    raise LabelError(f"{f}: annotation {a.get('id')!r} has no image or no [x, y, w, h] bbox")
                out.append(({"corral_id": im.get("corral_id"), "file_name": im.get("file_name")}, [float(v) for v in bbox], cats.get(a.get("category_id"), ""), a.get("corral_id"), f.parent))
        elif isinstance(doc, dict) and isinstance(doc.get("shapes"), list):  # LabelMe
            ref = {"corral_id": doc.get("corral_id"), "file_name": doc.get("imagePath")}
            for s in doc["shapes"]:
                pts = s.get("points") or []
                if s.get("shape_type", "rectangle") != "rectangle" or len(pts) != 2:
                    continue  # polygons and points are not boxes
                (x0, y0), (x1, y1) = pts
                x, y = min(x0, x1), min(y0, y1)
                out.append((ref, [float(x), float(y), float(abs(x1 - x0)), float(abs(y1 - y0))], str(s.get("label") or ""), s.get("corral_id"), f.parent))
        else:
            raise LabelError(f"{f}: neither a COCO file (images, annotations) nor a LabelMe file (shapes)")
    return out


def plan_box_import(path: Path, *, workspace: Workspace, revisions: Iterable[Any], report: Any) -> dict[str, str]:
    """Box id -> label for every annotation of a COCO / LabelMe file whose box the workspace has now.

    ``report`` (an ``ImportReport``) is filled in: rows read, unknown boxes, empty labels, clashes.
    """
    from corral.storage.label_checks import check_name
    from corral.storage.label_names import name_key

    state = current_state(workspace, revisions)
    by_uri = {p.uri: p for p in state.photos.values()}
    rows = _annotations(path)
    report.rows = len(rows)
    out: dict[str, str] = {}
    for n, (ref, bbox, label, box_id, base) in enumerate(rows, 1):
        if not label.strip():
            report.empty_label += 1
            continue
        photo = state.photos.get(str(ref.get("corral_id") or "")) or _photo_by_name(by_uri, str(ref.get("file_name") or ""), base)
        box = _match(photo, bbox, box_id) if photo is not None else None
        if box is None:
            report.unknown += 1
            if len(report.unknown_examples) < 10:
                report.unknown_examples.append(f"{ref.get('file_name') or ref.get('corral_id')} box {[round(v) for v in bbox]}")
            continue
        label = check_name(label, f"label of box {n} in {path}")
        if box.id in out and name_key(out[box.id]) != name_key(label):
            report.clashes += 1
        out[box.id] = label
    report.labels = len({name_key(v) for v in out.values()})
    return out


def _photo_by_name(by_uri: dict[str, Photo], name: str, base: Path) -> Photo | None:
    if not name:
        return None
    if name in by_uri:
        return by_uri[name]
    local = Path(name).expanduser()
    return by_uri.get(str(local if local.is_absolute() else (base / local).resolve()))


def _match(photo: Photo, bbox: list[float], box_id: Any) -> Box | None:
    if isinstance(box_id, str) and box_id in photo.boxes:
        return photo.boxes[box_id]
    best = max(photo.boxes.values(), key=lambda b: iou(b.bbox, bbox), default=None)
    return best if best is not None and iou(best.bbox, bbox) >= MATCH_IOU else None
