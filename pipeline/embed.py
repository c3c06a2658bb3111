"""The embed stage: images in, L2-normalised vectors out, in resumable shards.

Reader -> decoder (worker processes) -> model (one device) -> writer. Work is cut into shards of
``shard_size`` items; each shard's vectors and item records are written atomically, the items
file last, so a killed run restarted with the same arguments skips finished shards and ends with
exactly the output of an uninterrupted run. :func:`embed_items` is the stage over any subset of
items (what a distributed engine would call per partition); :func:`embed` is that function over a
whole source.

With a ``detector`` the stage embeds detector crops instead of whole images: see
:mod:`corral.pipeline.crops` for what becomes an item and how boxes are cleaned and cut.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from corral.pipeline import crops as cropping
from corral.pipeline import registry
from corral.pipeline.decode import DEFAULT_MAX_PIXELS
from corral.pipeline.device import cpu_count, pick_device
from corral.pipeline.feed import DecodeDataset, collate, decode_ahead, shard_batches, worker_init
from corral.pipeline.ingest import SourceError, SourceItem, list_source
from corral.pipeline.options import FOLDER_NAME_RULE, check_fields, check_folder_name, option
from corral.storage.workspace import (
    EmbeddingSet,
    Workspace,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_table,
    embedding_table,
    items_table,
    safe_name,
)

logger = logging.getLogger(__name__)


#: Images (with a detector: crops) per model call when ``batch_size`` is not given. On a CPU a batch
#: buys no parallelism (the threads share each layer), while one whose activations outgrow the
#: caches costs time: 16 ran EfficientNet-Lite0 25% and ResNet-50 15% faster than 64.
CPU_BATCH, CUDA_BATCH = 16, 256
#: Where a job's reason for not setting an option is the same.
_SERVER_FILE = "it names a file on the server"


@dataclass(frozen=True)
class EmbedConfig:
    """Options of the embed stage, each said once: its default, help and rule live on the field
    (:mod:`corral.pipeline.options`). ``corral embed``'s flags, the options an HTTP embed job takes
    and the options table of docs/embed.md are made from these fields. ``None`` means "chosen for
    this machine". Every value is checked when the object is made (``ValueError`` naming the
    parameter, the value and what is allowed); use :func:`dataclasses.replace` to vary one.
    """

    SECTIONS: ClassVar[dict[str, str]] = {"detection": "embed what a detector finds (faces, objects) instead of whole images; see `corral detectors`"}

    model: str = option(registry.DEFAULT_MODEL, "embedder name; see `corral models`", rule="an embedder name such as timm:resnet50.a1_in1k (`corral models` lists them)")
    weights: str | None = option(None, "weight file or folder for the model", unset="packaged weights, the Hugging Face cache, else downloaded once from the hub", job=_SERVER_FILE)
    offline: bool = option(False, "never download weights (as HF_HUB_OFFLINE=1 does); fail if they are not on this machine")
    random_weights: bool = option(False, "allow an untrained model when no weights are on this machine; nothing downloads (for testing only)")
    device: str = option("auto", "where the model runs: auto picks CUDA when present", pattern=r"auto|cpu|cuda(:[0-9]+)?", rule="auto, cpu, cuda or cuda:N")
    batch_size: int | None = option(None, "images (with --detector: crops) per model call", unset=f"{CPU_BATCH} on CPU, {CUDA_BATCH} on CUDA", low=1)
    num_workers: int | None = option(None, "decode worker processes", unset="all cores on CUDA, half on CPU", low=0, flag="--workers", job="the server decides how many processes it runs")
    shard_size: int = option(4096, "items per output shard, the unit of resume", low=1)
    dtype: str = option("float32", "vector type on disk", choices=("float32", "float16"))
    compile: bool = option(False, "torch.compile the model (CUDA only)")
    gpu_decode: bool | None = option(None, "decode JPEGs on the GPU with nvJPEG", unset="on with CUDA")
    decode_ahead: bool = option(
        True,
        "on CUDA, ready the next batches' pixels on the device in a thread while the model runs",
        flag="--no-decode-ahead",
        flag_help="on CUDA, ready each batch's pixels only after the model has run the last (fewer batches held on the device)",
    )
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "skip images with more pixels than this, as decompression bombs", low=1, job="it is the server's guard against decompression bombs")
    endpoint_url: str | None = option(None, "S3-compatible endpoint for s3:// sources", unset="the usual AWS settings", job="the server's S3 settings are its own")
    name: str | None = option(None, "embedding set name inside the workspace", unset="from the model name, plus the detector's", rule=FOLDER_NAME_RULE)
    progress: bool = option(True, "show a progress bar on stderr (the command line's --quiet hides it)", flag=False, job="a job always shows its progress, which the server follows")
    # Detection (see corral.pipeline.crops): with a detector, crops are the embedded items.
    detector: str | None = option(None, "detector name, or 'face' for the best face detector installed; each box becomes a crop item", unset="none, whole images are embedded", section="detection")
    detector_weights: str | None = option(None, "weight file for detectors that need one (torchvision:*)", unset="the torch hub cache", section="detection", job=_SERVER_FILE)
    min_score: float | None = option(None, "drop boxes scoring below this, in the detector's own units", unset="the detector's own threshold", section="detection")
    min_size: int = option(40, "drop boxes with a side under this many pixels; face detectors upsample to find faces this small", low=1, section="detection")
    pad: float = option(0.2, "context cut around each box, as a fraction of its longer side on each side", low=0.0, high=2.0, section="detection")
    detect_max_side: int = option(2048, "search larger images at this size, boxes scaled back", low=64, section="detection")

    def __post_init__(self) -> None:
        check_fields(self)
        check_folder_name(self)


@dataclass
class EmbedResult:
    items: int  # files the source names
    embedded: int  # vectors written by this run
    duplicates: int  # exact copies found by this run (recorded, not embedded)
    skipped: int  # files this run could not use
    skipped_by_reason: dict[str, int]
    already_done: int  # files finished by an earlier run
    model: str
    dim: int
    seconds: float
    embeddings: str  # the embedding set folder
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    detection: dict[str, Any] = field(default_factory=dict)  # with a detector: its counts (see corral.pipeline.crops)

    def summary(self) -> dict[str, Any]:
        """The CLI's last-line JSON."""
        keys = ("items", "embedded", "duplicates", "skipped", "skipped_by_reason", "model", "dim", "seconds", "embeddings")
        out = {k: getattr(self, k) for k in keys}
        out["seconds"] = round(self.seconds, 3)
        if self.detection:
            out["detection"] = self.detection
        return out


# --------------------------------------------------------------------------------------------
# The stage


def _resolve(cfg: EmbedConfig, device: str) -> tuple[int, int, bool]:
    """``(batch, decode workers, gpu_decode)`` on ``device``: what was given, else what suits it."""
    cuda = device.startswith("cuda")
    batch = cfg.batch_size or (CUDA_BATCH if cuda else CPU_BATCH)
    cpus = cpu_count()
    workers = cfg.num_workers if cfg.num_workers is not None else (cpus if cuda else max(1, cpus // 2))
    gpu_decode = cuda if cfg.gpu_decode is None else cfg.gpu_decode
    return batch, workers, gpu_decode


def _check_sidecar(es: EmbeddingSet, embedder: Any, cfg: EmbedConfig, detector: Any = None) -> dict[str, Any]:
    side = {
        "model": embedder.name,
        "weights_hash": embedder.info.get("weights_hash"),
        "preprocessing": embedder.preprocess.as_dict(),
        "dim": embedder.dim,
        "dtype": cfg.dtype,
        "count": 0,
        "format": "parquet shards part-NNNNN.parquet: id (string), embedding (fixed_size_list); items in part-NNNNN.items.parquet",
        "embedder": embedder.info,
    }
    keys: tuple[str, ...] = ("model", "weights_hash", "dim", "dtype")
    if detector is not None:
        side["detector"] = detector.name
        side["detection"] = {"detector": detector.info, "pad": cfg.pad, "min_size": cfg.min_size, "items": "crops; their parent images are items without vectors"}
        keys += ("detector",)
    if es.sidecar_path.exists():
        old = es.sidecar()
        for key in keys:
            if old.get(key) != side[key]:
                raise ValueError(f"embedding set {es.path} was made with {key}={old.get(key)!r}, this run has {side[key]!r}; use another --name (or workspace) for a different model")
        side["count"] = old.get("count", 0)
    return side


def embed(source: str, *, workspace: str | Path | Workspace, config: EmbedConfig | None = None) -> EmbedResult:
    """Embed every image a source names into ``workspace``; resumes where an earlier run stopped."""
    cfg = config or EmbedConfig()  # checked when it was made
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    registry.check_name(cfg.model)  # fail on a bad name before listing a million files
    if cfg.detector:
        from corral.pipeline.detect import resolve_name

        resolve_name(cfg.detector)
    items = list_source(source, endpoint_url=cfg.endpoint_url)
    if not items:
        raise SourceError(f"{source}: no files to embed (the source is empty, or holds only hidden files); nothing was embedded")
    return embed_items(items, workspace=ws, config=cfg, source=str(source))


def embed_items(items: list[SourceItem], *, workspace: Workspace, config: EmbedConfig, source: str = "", embedder: Any = None) -> EmbedResult:
    """The embed stage over the given items (any subset of a source).

    ``embedder`` may be passed already built (a service or benchmark that keeps one loaded); it
    must match ``config.model``. One embed run writes a workspace at a time: a second one waits
    for the first (saying so) and then resumes from its finished shards.
    """
    from corral.pipeline.heap import reuse_freed_memory
    from corral.storage.wslock import workspace_lock

    # Each batch's activations reuse the memory the last batch freed (see corral.pipeline.heap).
    with workspace_lock(workspace.ensure().root / ".embed.lock", what="embed"), reuse_freed_memory():
        return _embed_items(items, workspace=workspace, config=config, source=source, embedder=embedder)


def _embed_items(items: list[SourceItem], *, workspace: Workspace, config: EmbedConfig, source: str, embedder: Any) -> EmbedResult:
    import torch

    cfg = config
    t_start = time.perf_counter()
    ws = workspace.ensure()
    device, why = pick_device(cfg.device)
    logger.info("device %s (%s)", device, why)
    if embedder is None:
        embedder = registry.create_embedder(cfg.model, weights=cfg.weights, allow_random=cfg.random_weights, compile=cfg.compile, offline=cfg.offline or None)
    embedder = embedder.to(device)
    batch, workers, gpu_decode = _resolve(cfg, device)
    detector, crop_opts, detector_why = _build_detector(cfg, embedder, device)
    default_name = safe_name(embedder.name.replace("timm:", ""))
    if detector is not None:
        default_name = safe_name(f"{default_name}__{detector.name}")  # crops never share a set with whole images
    es = ws.embedding_set(cfg.name or default_name)
    es.path.mkdir(parents=True, exist_ok=True)
    for tmp in es.path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    sidecar = _check_sidecar(es, embedder, cfg, detector)
    atomic_write_json(es.sidecar_path, sidecar)

    # What earlier runs finished: their uris are skipped, their ids count as seen for de-duplication.
    done_uris: dict[str, int] = {}
    seen: dict[str, str] = {}
    shards = es.complete_shards()
    for i in shards:
        import pyarrow.parquet as pq

        t = pq.read_table(es.shard_paths(i)[1], columns=["id", "uri", "status", "bytes"])
        for id_, uri, status, size in zip(*(t.column(c).to_pylist() for c in ("id", "uri", "status", "bytes"))):
            done_uris[uri] = size
            if status == "ok":
                seen.setdefault(id_, uri)
    todo = [it for it in items if not (it.uri in done_uris and (it.size < 0 or done_uris[it.uri] == it.size))]
    next_shard = (shards[-1] + 1) if shards else 0
    labels = {it.uri: it for it in todo}
    logger.info("%d items, %d done earlier, %d to embed; batch %d, %d decode workers, gpu_decode=%s", len(items), len(items) - len(todo), len(todo), batch, workers, gpu_decode)

    run_cfg = {
        **asdict(cfg),
        "device_resolved": device,
        "device_reason": why,
        "batch_size_resolved": batch,
        "num_workers_resolved": workers,
        "gpu_decode_resolved": gpu_decode,
        "source": source,
        "embedding_set": str(es.path),
        "embedder": embedder.info,
    }
    if detector is not None:
        run_cfg.update(detector_resolved=detector.name, detector_reason=detector_why, detector_info=detector.info, crop_options=asdict(crop_opts))
    run_path = ws.runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-embed.json"
    atomic_write_json(run_path, {"config": run_cfg, "status": "running"})

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    timings = {"decode_worker_s": 0.0, "device_decode_s": 0.0, "infer_s": 0.0, "write_s": 0.0, "wait_s": 0.0}
    out_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    pre = embedder.preprocess
    detect_counts: Counter[str] = Counter()

    if todo:
        if detector is None:
            ds: Any = DecodeDataset(todo, pre, max_pixels=cfg.max_pixels, endpoint_url=cfg.endpoint_url, raw_jpeg=gpu_decode)
        else:
            # CPU detectors (and every detector on a CPU run) work in the decode workers; GPU ones batch here.
            detect_here = not (device.startswith("cuda") and detector.uses_gpu)
            ds = cropping.CropDataset(todo, crop_opts, max_pixels=cfg.max_pixels, endpoint_url=cfg.endpoint_url, detect_here=detect_here, detector_options=_detector_options(cfg))
            if detect_here:
                ds.share_detector(detector)
            timings["detect_s"] = 0.0
        loader = torch.utils.data.DataLoader(
            ds,
            # With a detector ``batch`` counts crops per model call; photos hold several, so they are
            # read a quarter batch at a time and detection overlaps embedding sooner.
            batch_sampler=shard_batches(len(todo), cfg.shard_size, batch if detector is None else max(1, batch // 4)),
            num_workers=workers,
            collate_fn=collate if detector is None else cropping.collate,
            pin_memory=device.startswith("cuda"),
            worker_init_fn=functools.partial(worker_init, nice=0 if device.startswith("cuda") else 10) if workers else None,
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        bar = _progress(len(todo), cfg.progress)
        shard_rows: list[dict[str, Any]] = []
        shard_ids: list[str] = []
        shard_vecs: list[np.ndarray] = []
        shard_len = lambda k: min(cfg.shard_size, len(todo) - k * cfg.shard_size)  # noqa: E731
        shard_k = 0
        shard_items = 0  # source items in the open shard (a crop run writes more rows than that)
        t_wait = time.perf_counter()
        batches = decode_ahead(loader, pre, device, cfg.max_pixels, timings, ahead=cfg.decode_ahead) if detector is None else ((b, None, None) for b in loader)
        for b, dev_px, _ in batches:
            timings["wait_s"] += time.perf_counter() - t_wait
            recs = b["records"]
            timings["decode_worker_s"] += sum(r.pop("decode_s", 0.0) for r in recs)
            t0 = time.perf_counter()
            if detector is None:
                if dev_px is None:
                    raise RuntimeError("decode_ahead yielded a batch without its device pixels")
                vecs, rows, ids = _embed_batch(b, recs, dev_px, embedder, device, seen, labels)
            else:
                timings["detect_s"] += sum(r.pop("detect_s", 0.0) for r in recs)
                t1 = time.perf_counter()
                cropping.detect_in_main(recs, detector, crop_opts, device)
                timings["detect_s"] += time.perf_counter() - t1
                vecs, rows, ids = cropping.rows_for_batch(recs, embedder=embedder, opts=crop_opts, device=device, seen=seen, sources=labels, counts=detect_counts, batch_size=batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            timings["infer_s"] += time.perf_counter() - t0
            shard_rows.extend(rows)
            shard_items += len(recs)
            if len(ids):
                shard_ids.extend(ids)
                shard_vecs.append(vecs.astype(out_dtype, copy=False))
            for r in rows:
                if r.get("parent_id"):
                    counts["crops"] += 1
                    continue
                counts[r["status"]] += 1
                if r["status"] == "skipped":
                    reasons[r["reason"]] += 1
            bar.update(len(recs))
            if shard_items == shard_len(shard_k):
                t0 = time.perf_counter()
                dim = embedder.dim
                mat = np.concatenate(shard_vecs) if shard_vecs else np.empty((0, dim), dtype=out_dtype)
                emb_path, items_path = es.shard_paths(next_shard + shard_k)
                atomic_write_table(emb_path, embedding_table(shard_ids, mat))
                atomic_write_table(items_path, items_table(shard_rows))  # completion marker, last
                sidecar["count"] += len(shard_ids)
                atomic_write_json(es.sidecar_path, sidecar)
                timings["write_s"] += time.perf_counter() - t0
                shard_rows, shard_ids, shard_vecs = [], [], []
                shard_items = 0
                shard_k += 1
            t_wait = time.perf_counter()
        bar.close()

    _write_skipped(ws)
    seconds = time.perf_counter() - t_start
    res = EmbedResult(
        items=len(items),
        embedded=counts["ok"] if detector is None else counts["crops"],
        duplicates=counts["duplicate"],
        skipped=counts["skipped"],
        skipped_by_reason=dict(sorted(reasons.items())),
        already_done=len(items) - len(todo),
        model=embedder.name,
        dim=embedder.dim,
        seconds=seconds,
        embeddings=str(es.path),
        timings={k: round(v, 3) for k, v in timings.items()},
        device=device,
        detection=cropping.detection_summary(detect_counts, crop_opts, detector_why) if detector is not None else {},
    )
    atomic_write_json(run_path, {"config": run_cfg, "status": "complete", "result": asdict(res)})
    return res


def _detector_options(cfg: EmbedConfig) -> dict[str, Any]:
    return {"weights": cfg.detector_weights, "min_size": cfg.min_size}


def _build_detector(cfg: EmbedConfig, embedder: Any, device: str) -> tuple[Any, Any, str]:
    """``(detector, crop options, why this detector)``, or ``(None, None, "")`` without one."""
    if not cfg.detector:
        return None, None, ""
    from corral.pipeline.detect import create_detector, resolve_name

    name, why = resolve_name(cfg.detector)
    detector = create_detector(name, **_detector_options(cfg))
    if device.startswith("cuda") and detector.uses_gpu:
        detector = detector.to(device)
    opts = cropping.CropOptions(
        detector=detector.name,
        min_score=detector.default_min_score if cfg.min_score is None else float(cfg.min_score),
        min_size=cfg.min_size,
        pad=max(cfg.pad, float(getattr(embedder, "min_crop_pad", 0.0))),
        crop_size=int(embedder.preprocess.size),
        detect_max_side=cfg.detect_max_side,
    )
    logger.info("detector %s (%s); min score %g, min size %d px, pad %g", detector.name, why, opts.min_score, opts.min_size, opts.pad)
    return detector, opts, why


def _embed_batch(b: dict[str, Any], recs: list[dict[str, Any]], dev_px: dict[int, Any], embedder: Any, device: str, seen: dict[str, str], sources: dict[str, SourceItem]):
    """Decide duplicates and run the model; returns (vectors, item rows, embedded ids).

    ``dev_px`` holds the pixels decoded on the device (:func:`corral.pipeline.feed.decode_ahead`); CPU-decoded ones
    arrive stacked in ``b["pixels"]``.
    """
    import torch

    cpu_px = iter(b["pixels"]) if b["pixels"] is not None else iter(())
    rows, ids, batch_px = [], [], []
    for r in recs:
        px = None
        if "orientation" not in r and r["status"] == "ok":
            px = next(cpu_px)
        elif r["pos"] in dev_px:
            px = dev_px[r["pos"]]
        src = sources.get(r["uri"])
        row = {k: r[k] for k in ("id", "uri", "status", "reason", "detail", "bytes", "width", "height")}
        if src is not None:
            row["label"], row["meta"] = src.label, src.meta
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
        return np.empty((0, embedder.dim), dtype=np.float32), rows, ids
    px = torch.stack([p.to(device, non_blocking=True) for p in batch_px])
    vecs = embedder.embed(px).to("cpu").numpy()
    return vecs, rows, ids


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="embed", disable=not enabled, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _write_skipped(ws: Workspace) -> None:
    """The full list of skipped files, with reasons, across every embed run in the workspace."""
    t = ws.items()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["uri", "reason", "detail"])
    if t.num_rows:
        for uri, status, reason, detail in zip(*(t.column(c).to_pylist() for c in ("uri", "status", "reason", "detail"))):
            if status == "skipped":
                w.writerow([uri, reason, detail])
    atomic_write_bytes(ws.skipped_path, buf.getvalue().encode())
