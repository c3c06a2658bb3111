"""Detector crops inside the embed stage: detect, clean the boxes, cut square crops, embed them.

Each image a detector looks at stays an item (status ``ok``, with its own row, but no vector: with
a detector the map is a map of crops). Each box kept becomes a crop item:

* ``id``: ``blake2b(f"{parent_id}:{json.dumps([x, y, w, h])}")``, so re-running gives the same ids;
* ``uri``: the parent's uri plus a media fragment, ``<parent uri>#xywh=x,y,w,h``;
* ``parent_id``, ``bbox`` (``[x, y, w, h]``, integers, parent pixels, clipped to the image);
* ``meta``: ``{"detector", "score", "pad"}`` (plus ``"category"`` for object detectors).

Boxes are cleaned before anything is cut: non-finite ones dropped, the rest clipped to the image
(counted as ``clipped``; a box left with no area is ``outside``), then boxes scoring under
``min_score`` (``low_score``) or with a side under ``min_size`` pixels (``small``) are dropped.
Images whose shorter side is under ``min_size`` are not searched (``too_small``); images larger
than ``detect_max_side`` are searched at that size and their boxes scaled back. An image the
detector itself fails on keeps its item row, gets no crops and is counted (``failed``).

The pixels embedded are a square around the box, ``max(w, h) * (1 + 2 * pad)`` on a side,
resized to the embedder's input size (black where the square leaves the image). An embedder that
aligns its input itself (``embed_crops``, e.g. ``dlib:face-resnet``) gets the box's position in
that square too, and may ask for more context than ``pad`` (``min_crop_pad``).

Where detection runs: with a CPU-bound detector (or on a CPU-only run) inside the decode worker
processes, next to decoding, so only small crops travel; with a GPU detector on CUDA in the main
process, batched, with crops cut on the device.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from corral.pipeline.decode import SkipItem, content_id, open_image
from corral.pipeline.detect import Detections, Detector, create_detector
from corral.pipeline.feed import read_record
from corral.pipeline.ingest import SourceItem

logger = logging.getLogger(__name__)

#: Counters of the detect step, in the order the summary lists them.
DETECT_COUNTS = ("images", "too_small", "failed", "no_boxes", "boxes", "clipped", "outside", "invalid", "low_score", "small", "crops")


def crop_id(parent_id: str, bbox: list[int]) -> str:
    """The id of a crop: a hash of its parent's id and its box (``[x, y, w, h]``)."""
    return content_id(f"{parent_id}:{json.dumps([int(v) for v in bbox])}".encode())


def crop_uri(parent_uri: str, bbox: list[int]) -> str:
    """The parent's uri with a media fragment naming the box: ``...#xywh=x,y,w,h``."""
    return parent_uri + "#xywh=" + ",".join(str(int(v)) for v in bbox)


@dataclass(frozen=True)
class CropOptions:
    """What the detect step keeps and how it cuts (checked as ``EmbedConfig`` fields when the config is made)."""

    detector: str  # resolved registry name
    min_score: float  # boxes scoring below are dropped
    min_size: int  # boxes with a side below this many parent pixels are dropped
    pad: float  # context around a box, as a fraction of its longer side, on each side
    crop_size: int  # side of the square crop handed to the embedder
    detect_max_side: int  # larger images are searched at this size


def clean_boxes(det: Detections, width: int, height: int, *, min_score: float, min_size: int, counts: Counter) -> list[tuple[list[int], float, str]]:
    """Clip, round and filter one image's boxes; returns ``([x, y, w, h], score, category)`` kept."""
    kept = []
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(det.scores, np.float64).reshape(-1)
    counts["boxes"] += len(boxes)
    for j, (b, s) in enumerate(zip(boxes, scores)):
        if not (np.isfinite(b).all() and math.isfinite(s)):
            counts["invalid"] += 1
            continue
        x0, y0, x1, y1 = min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])
        cx0, cy0 = max(0.0, x0), max(0.0, y0)
        cx1, cy1 = min(float(width), x1), min(float(height), y1)
        if cx1 - cx0 < 1 or cy1 - cy0 < 1:
            counts["outside"] += 1
            continue
        ix0, iy0 = int(math.floor(cx0)), int(math.floor(cy0))
        ix1, iy1 = int(math.ceil(cx1)), int(math.ceil(cy1))
        if s < min_score:
            counts["low_score"] += 1
            continue
        if min(ix1 - ix0, iy1 - iy0) < min_size:
            counts["small"] += 1
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            counts["clipped"] += 1  # kept, cut down to the image
        cat = det.categories[j] if j < len(det.categories) else ""
        kept.append(([ix0, iy0, ix1 - ix0, iy1 - iy0], float(s), cat))
    return kept


def detect_scaled(detector: Detector, images: list[np.ndarray], max_side: int) -> list[Detections]:
    """Run ``detector`` with images over ``max_side`` shrunk first; boxes come back in full-size pixels."""
    from PIL import Image

    small, scales = [], []
    for img in images:
        h, w = img.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s < 1.0:
            img = np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0))
        small.append(img)
        scales.append(s)
    found = detector.detect(small)
    for det, s in zip(found, scales):
        if s < 1.0 and len(det):
            det.boxes = det.boxes / np.float32(s)
    return found


def cut_squares(image: Any, bboxes: list[list[int]], *, size: int, pad: float) -> tuple[Any, Any]:
    """Square crops around boxes, resized to ``size``; works on any torch device.

    ``image`` is a uint8 ``H x W x 3`` tensor. Returns ``(crops uint8 [k, size, size, 3],
    inner float32 [k, 4])`` where ``inner`` is each box as ``x0, y0, x1, y1`` in crop pixels.
    """
    import torch
    import torch.nn.functional as F

    h, w = int(image.shape[0]), int(image.shape[1])
    crops, inner = [], []
    for x, y, bw, bh in bboxes:
        side = max(1, int(round(max(bw, bh) * (1 + 2 * pad))))
        rx0 = int(round(x + bw / 2 - side / 2))
        ry0 = int(round(y + bh / 2 - side / 2))
        # A box on a huge photo is sampled every ``step`` pixels first, so the square handed to the
        # resize stays near twice the output size instead of the box's own (gigabytes as floats).
        step = max(1, side // (2 * size))
        n = -(-side // step)
        canvas = torch.zeros((n, n, 3), dtype=torch.uint8, device=image.device)
        jx0, jy0 = max(0, -(-(0 - rx0) // step)), max(0, -(-(0 - ry0) // step))
        jx1, jy1 = min(n, -(-(w - rx0) // step)), min(n, -(-(h - ry0) // step))
        if jx1 > jx0 and jy1 > jy0:
            canvas[jy0:jy1, jx0:jx1] = image[ry0 + jy0 * step : ry0 + jy1 * step : step, rx0 + jx0 * step : rx0 + jx1 * step : step]
        x_ = canvas.permute(2, 0, 1).unsqueeze(0).float()
        if n != size:
            x_ = F.interpolate(x_, size=(size, size), mode="bilinear", antialias=n > size, align_corners=False)
        crops.append(x_[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0))
        k = size / side
        inner.append([(x - rx0) * k, (y - ry0) * k, (x + bw - rx0) * k, (y + bh - ry0) * k])
    if not crops:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=image.device), torch.zeros((0, 4))
    return torch.stack(crops), torch.tensor(inner, dtype=torch.float32)


def _finish(rec: dict[str, Any], image: Any, det: Detections, opts: CropOptions, counts: Counter) -> None:
    """Clean ``det`` and cut the crops of one image into ``rec`` (``crops``, ``inner``, ``boxes``)."""
    kept = clean_boxes(det, rec["width"], rec["height"], min_score=opts.min_score, min_size=opts.min_size, counts=counts)
    px, inner = cut_squares(image, [k[0] for k in kept], size=opts.crop_size, pad=opts.pad)
    rec["crops"], rec["inner"] = px, inner
    rec["boxes"] = [{"bbox": b, "score": s, "category": c} for b, s, c in kept]
    rec["counts"] = dict(counts)


class CropDataset:
    """Map-style dataset for the decode workers: bytes -> full image (-> boxes -> crops).

    With ``detect_here`` the worker detects and cuts, and the record carries ``crops``; otherwise
    it carries the decoded ``image`` for the main process to detect on the GPU.
    """

    def __init__(self, items: list[SourceItem], opts: CropOptions, *, max_pixels: int, endpoint_url: str | None, detect_here: bool, detector_options: dict[str, Any]):
        self.items = items
        self.opts = opts
        self.max_pixels = max_pixels
        self.endpoint_url = endpoint_url
        self.detect_here = detect_here
        self.detector_options = detector_options
        self._detector: Detector | None = None

    def __len__(self) -> int:
        return len(self.items)

    def share_detector(self, detector: Detector) -> None:
        """Use an already built detector (forked workers inherit it; pickled ones build their own)."""
        self._detector = detector

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # dlib and OpenCV models do not pickle
        return state

    def detector(self) -> Detector:
        if self._detector is None:  # built once per worker process
            self._detector = create_detector(self.opts.detector, **self.detector_options)
        return self._detector

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        it = self.items[i]
        t0 = time.perf_counter()
        rec, data = read_record(it, i, self.endpoint_url)
        if data is None:
            rec["decode_s"] = time.perf_counter() - t0
            return rec
        try:
            rec["id"] = content_id(data) if data else ""
            img = np.array(open_image(data, max_pixels=self.max_pixels))
        except SkipItem as e:
            rec.update(status="skipped", reason=e.reason, detail=e.detail, decode_s=time.perf_counter() - t0)
            return rec
        rec["height"], rec["width"] = int(img.shape[0]), int(img.shape[1])
        rec["decode_s"] = time.perf_counter() - t0
        if min(img.shape[:2]) < self.opts.min_size:
            rec["too_small"] = True
            return rec
        if not self.detect_here:
            rec["image"] = torch.from_numpy(np.ascontiguousarray(img))
            return rec
        t1 = time.perf_counter()
        det = _guarded(self.detector(), [img], self.opts.detect_max_side, [it.uri])[0]
        if det is None:
            rec["failed"] = True
        else:
            _finish(rec, torch.from_numpy(img), det, self.opts, Counter())
        rec["detect_s"] = time.perf_counter() - t1
        return rec


def _guarded(detector: Detector, images: list[np.ndarray], max_side: int, uris: list[str]) -> list[Detections | None]:
    """Detections per image; None where the detector raised (the batch is retried one by one)."""
    try:
        return list(detect_scaled(detector, images, max_side))
    except Exception as e:  # a detector's own failure on odd input must not end the job
        if len(images) == 1:
            logger.warning("detector %s failed on %s: %s: %s", getattr(detector, "name", "?"), uris[0], type(e).__name__, str(e)[:200])
            return [None]
    return [_guarded(detector, [img], max_side, [u])[0] for img, u in zip(images, uris)]


def collate(recs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"records": recs}


def detect_in_main(recs: list[dict[str, Any]], detector: Detector, opts: CropOptions, device: str) -> None:
    """The GPU path: detect the batch's images together, cut crops on ``device``."""
    todo = [r for r in recs if "image" in r]
    if not todo:
        return
    found = _guarded(detector, [r["image"].numpy() for r in todo], opts.detect_max_side, [r["uri"] for r in todo])
    for r, det in zip(todo, found):
        image = r.pop("image")
        if det is None:
            r["failed"] = True
        else:
            _finish(r, image.to(device, non_blocking=True), det, opts, Counter())


def embed_crops(embedder: Any, pixels: Any, inner: Any, *, batch_size: int) -> np.ndarray:
    """Vectors of crops, ``batch_size`` at a time; aligning embedders get the boxes inside the crops."""
    import torch

    out = []
    for s in range(0, int(pixels.shape[0]), batch_size):
        px = pixels[s : s + batch_size]
        if hasattr(embedder, "embed_crops"):
            v = embedder.embed_crops(px, inner[s : s + batch_size])
        else:
            v = embedder.embed(px)
        out.append(v.to("cpu").numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, int(embedder.dim)), np.float32)


def rows_for_batch(
    recs: list[dict[str, Any]], *, embedder: Any, opts: CropOptions, device: str, seen: dict[str, str], sources: dict[str, SourceItem], counts: Counter, batch_size: int
) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """Item rows (parents and crops) and crop vectors for one batch of worker records."""
    import torch

    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    pixels, inners = [], []
    for r in recs:
        row = {k: r[k] for k in ("id", "uri", "status", "reason", "detail", "bytes", "width", "height")}
        src = sources.get(r["uri"])
        if src is not None:
            row["label"], row["meta"] = src.label, src.meta
        rows.append(row)
        if r["status"] != "ok":
            continue
        first = seen.get(r["id"])
        if first is not None:
            row.update(status="duplicate", duplicate_of=first)
            continue
        seen[r["id"]] = r["uri"]
        counts["images"] += 1
        if r.get("too_small") or r.get("failed"):
            counts["too_small" if r.get("too_small") else "failed"] += 1
            continue
        counts.update(r.get("counts", {}))
        boxes = r.get("boxes", [])
        if not boxes:
            counts["no_boxes"] += 1
            continue
        for j, box in enumerate(boxes):
            cid = crop_id(r["id"], box["bbox"])
            if cid in seen:  # the detector returned the same box twice
                continue
            seen[cid] = r["uri"]
            meta = {"detector": opts.detector, "score": round(box["score"], 4), "pad": opts.pad}
            if box["category"]:
                meta["category"] = box["category"]
            x, y, w, h = box["bbox"]
            rows.append({"id": cid, "uri": crop_uri(r["uri"], box["bbox"]), "status": "ok", "width": w, "height": h, "parent_id": r["id"], "bbox": [x, y, w, h], "meta": meta})
            ids.append(cid)
            pixels.append(r["crops"][j])
            inners.append(r["inner"][j])
            counts["crops"] += 1
    if not ids:
        return np.zeros((0, int(embedder.dim)), np.float32), rows, ids
    px = torch.stack([p.to(device, non_blocking=True) for p in pixels])
    vecs = embed_crops(embedder, px, torch.stack(inners), batch_size=batch_size)
    return vecs, rows, ids


def detection_summary(counts: Counter, opts: CropOptions, why: str) -> dict[str, Any]:
    """The ``detection`` part of the embed summary."""
    out: dict[str, Any] = {"detector": opts.detector, "detector_reason": why, "min_score": opts.min_score, "min_size": opts.min_size, "pad": opts.pad}
    out.update({k: int(counts.get(k, 0)) for k in DETECT_COUNTS})
    return out
