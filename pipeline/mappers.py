"""The embed stage's mappers: a batch of decoded items in, item rows and vectors out.

Two mappers share one interface, so a runner (the local one in :mod:`corral.pipeline.embed`, the
Ray actors of :mod:`corral.pipeline.embed_ray`) drives either without asking which it has:

* :class:`ImageMapper` embeds whole images: decode workers hand over pixels (or raw JPEG bytes,
  decoded on the device by :func:`corral.pipeline.feed.decode_ahead`);
* :class:`CropMapper` embeds what a detector finds (:mod:`corral.pipeline.crops`): each image
  stays an item without a vector, and each box kept becomes a crop item with one.

The decode side of a mapper (``dataset``, ``collate``, ``read_batch``) runs in decode worker
processes; ``batches`` and ``map`` run where the model is. ``map`` decides duplicates against
``seen`` (content id -> first uri) before the model runs, so a copy is never embedded twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from corral.pipeline import crops as cropping
from corral.pipeline.feed import DecodeDataset, collate, decode_ahead
from corral.pipeline.ingest import SourceItem

logger = logging.getLogger(__name__)


@dataclass
class Mapped:
    """One batch's output: item rows, the ids that got a vector, and those vectors (float32)."""

    vectors: np.ndarray
    rows: list[dict[str, Any]]
    ids: list[str]
    items: int  # source items the batch covered


@dataclass(frozen=True)
class Described:
    """What a mapper embeds with, as the sidecar and the run record say it."""

    model: str
    info: dict[str, Any]
    preprocessing: dict[str, Any]
    dim: int
    detector: str | None = None
    detector_info: dict[str, Any] | None = None
    detector_reason: str = ""
    crop_options: dict[str, Any] | None = None


class Mapper(Protocol):
    """Decode + model for one kind of item (whole images or detector crops)."""

    read_batch: int  # source items per batch handed over by the decode workers
    timing_keys: tuple[str, ...]  # the timings it adds to the run's

    def dataset(self, items: Sequence[SourceItem]) -> Any:
        """A map-style dataset that reads and decodes ``items`` (runs in decode workers)."""
        ...

    def collate(self, recs: list[dict[str, Any]]) -> dict[str, Any]: ...

    def batches(self, loader: Any, timings: dict[str, float]) -> Iterator[tuple[dict[str, Any], Any]]:
        """``(batch, device pixels or None)`` from the loader, in order."""
        ...

    def map(self, b: dict[str, Any], extra: Any, *, seen: dict[str, str], sources: dict[str, SourceItem], timings: dict[str, float]) -> Mapped: ...

    def describe(self) -> Described: ...

    def summary(self) -> dict[str, Any]:
        """Counts the mapper kept (a detector's), for the run's result; empty when none."""
        ...


def _row(r: dict[str, Any], sources: dict[str, SourceItem]) -> dict[str, Any]:
    row = {k: r[k] for k in ("id", "uri", "status", "reason", "detail", "bytes", "width", "height")}
    src = sources.get(r["uri"])
    if src is not None:
        row["label"], row["meta"] = src.label, src.meta
    return row


class ImageMapper:
    """Whole images: one item, one vector (duplicates and skipped files get rows only)."""

    timing_keys = ("decode_worker_s", "device_decode_s", "infer_s", "write_s", "wait_s")

    def __init__(self, embedder: Any, *, device: str, batch: int, max_pixels: int, endpoint_url: str | None, gpu_decode: bool, decode_ahead: bool):
        self.embedder = embedder
        self.device = device
        self.read_batch = batch
        self.max_pixels = max_pixels
        self.endpoint_url = endpoint_url
        self.gpu_decode = gpu_decode
        self.ahead = decode_ahead

    def dataset(self, items: Sequence[SourceItem]) -> DecodeDataset:
        return DecodeDataset(list(items), self.embedder.preprocess, max_pixels=self.max_pixels, endpoint_url=self.endpoint_url, raw_jpeg=self.gpu_decode)

    def collate(self, recs: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(recs)

    def batches(self, loader: Any, timings: dict[str, float]) -> Iterator[tuple[dict[str, Any], Any]]:
        for b, dev_px, _ in decode_ahead(loader, self.embedder.preprocess, self.device, self.max_pixels, timings, ahead=self.ahead):
            yield b, dev_px

    def map(self, b: dict[str, Any], extra: Any, *, seen: dict[str, str], sources: dict[str, SourceItem], timings: dict[str, float]) -> Mapped:
        """Decide duplicates and run the model. ``extra`` holds the pixels decoded on the device;
        CPU-decoded ones arrive stacked in ``b["pixels"]``."""
        import torch

        if extra is None:
            raise RuntimeError("decode_ahead yielded a batch without its device pixels")
        recs = b["records"]
        cpu_px = iter(b["pixels"]) if b["pixels"] is not None else iter(())
        rows, ids, batch_px = [], [], []
        for r in recs:
            px = None
            if "orientation" not in r and r["status"] == "ok":
                px = next(cpu_px)
            elif r["pos"] in extra:
                px = extra[r["pos"]]
            row = _row(r, sources)
            if r["status"] == "ok":
                first = seen.get(r["id"])
                if first is not None:
                    row.update(status="duplicate", duplicate_of=first)
                else:
                    seen[r["id"]] = r["uri"]
                    ids.append(r["id"])
                    if px is None:
                        raise RuntimeError(f"{r['uri']}: decoded as ok but has no pixels")
                    batch_px.append(px)
            rows.append(row)
        if not ids:
            return Mapped(np.empty((0, self.embedder.dim), dtype=np.float32), rows, ids, len(recs))
        px = torch.stack([p.to(self.device, non_blocking=True) for p in batch_px])
        vecs = self.embedder.embed(px).to("cpu").numpy()
        return Mapped(vecs, rows, ids, len(recs))

    def describe(self) -> Described:
        e = self.embedder
        return Described(e.name, e.info, e.preprocess.as_dict(), int(e.dim))

    def summary(self) -> dict[str, Any]:
        return {}


class CropMapper:
    """Detector crops: each image an item without a vector, each box kept a crop item with one.

    CPU detectors (and every detector on a CPU run) work in the decode workers; GPU ones batch
    here, with crops cut on the device.
    """

    timing_keys = (*ImageMapper.timing_keys, "detect_s")

    def __init__(self, embedder: Any, detector: Any, opts: cropping.CropOptions, *, device: str, batch: int, max_pixels: int, endpoint_url: str | None, detector_options: dict[str, Any], why: str):
        self.embedder = embedder
        self.detector = detector
        self.opts = opts
        self.device = device
        self.batch = batch
        # ``batch`` counts crops per model call; photos hold several, so they are read a quarter
        # batch at a time and detection overlaps embedding sooner.
        self.read_batch = max(1, batch // 4)
        self.max_pixels = max_pixels
        self.endpoint_url = endpoint_url
        self.detector_options = detector_options
        self.why = why
        self.detect_here = not (device.startswith("cuda") and detector.uses_gpu)
        self.counts: Counter[str] = Counter()

    def dataset(self, items: Sequence[SourceItem]) -> cropping.CropDataset:
        ds = cropping.CropDataset(list(items), self.opts, max_pixels=self.max_pixels, endpoint_url=self.endpoint_url, detect_here=self.detect_here, detector_options=self.detector_options)
        if self.detect_here:
            ds.share_detector(self.detector)
        return ds

    def collate(self, recs: list[dict[str, Any]]) -> dict[str, Any]:
        return cropping.collate(recs)

    def batches(self, loader: Any, timings: dict[str, float]) -> Iterator[tuple[dict[str, Any], Any]]:
        for b in loader:
            yield b, None

    def map(self, b: dict[str, Any], extra: Any, *, seen: dict[str, str], sources: dict[str, SourceItem], timings: dict[str, float]) -> Mapped:
        recs = b["records"]
        timings["detect_s"] += sum(r.pop("detect_s", 0.0) for r in recs)
        t1 = time.perf_counter()
        cropping.detect_in_main(recs, self.detector, self.opts, self.device)
        timings["detect_s"] += time.perf_counter() - t1
        vecs, rows, ids = cropping.rows_for_batch(recs, embedder=self.embedder, opts=self.opts, device=self.device, seen=seen, sources=sources, counts=self.counts, batch_size=self.batch)
        for r, row in zip(recs, (x for x in rows if not x.get("parent_id"))):
            if row["status"] == "ok":
                row["_counts"] = item_counts(r)  # this image's share of the counts, should a later shard prove it a copy
        return Mapped(vecs, rows, ids, len(recs))

    def describe(self) -> Described:
        e, d = self.embedder, self.detector
        opts = {k: getattr(self.opts, k) for k in ("detector", "min_score", "min_size", "pad", "crop_size", "detect_max_side")}
        return Described(e.name, e.info, e.preprocess.as_dict(), int(e.dim), d.name, d.info, self.why, opts)

    def summary(self) -> dict[str, Any]:
        return cropping.detection_summary(self.counts, self.opts, self.why)


def item_counts(r: dict[str, Any]) -> dict[str, int]:
    """The detection counts one image (a worker record, status ok) adds, as
    :func:`corral.pipeline.crops.rows_for_batch` counts them."""
    c: Counter[str] = Counter(images=1)
    if r.get("too_small") or r.get("failed"):
        c["too_small" if r.get("too_small") else "failed"] += 1
        return dict(c)
    c.update(r.get("counts", {}))
    boxes = r.get("boxes", [])
    if not boxes:
        c["no_boxes"] += 1
    c["crops"] += len({cropping.crop_id(r["id"], box["bbox"]) for box in boxes})
    return dict(c)
