"""The embed stage: images in, L2-normalised vectors out, in resumable shards.

The stage is four small parts and a runner over them (the shape of clip-retrieval's batch
inference):

* the **reader** (:class:`corral.pipeline.shards.ShardReader`) lists what is left to do from a
  streamed, sorted listing of the source and cuts it into shards of ``shard_size`` items;
* a **mapper** (:mod:`corral.pipeline.mappers`) turns a batch of decoded items into item rows and
  vectors: whole images, or with a ``detector`` the crops it finds (:mod:`corral.pipeline.crops`);
* the **writer** (:class:`corral.pipeline.shards.ShardWriter`) writes a shard's vectors and then
  its items file, each atomically: the items file marks the shard complete;
* the **runner** (:func:`run_batches`) drives them and times read (``wait_s``), infer and write.

Two engines run those parts: the local one here (decode worker processes feeding one model; with
the model on the CPU, decode threads of its own process that work in the model's gaps), and
the Ray one (:mod:`corral.pipeline.embed_ray`: an actor per GPU, each with the model loaded once,
embedding whole shards). A killed run restarted with the same arguments skips finished shards and
ends with exactly the output of an uninterrupted run. :func:`embed_items` is the stage over any
subset of items; :func:`embed` is that function over a whole source.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from corral.pipeline import crops as cropping
from corral.pipeline import registry
from corral.pipeline.decode import DEFAULT_MAX_PIXELS
from corral.pipeline.device import cpu_count, pick_device
from corral.pipeline.feed import ShardStream, stream_loader, thread_loader
from corral.pipeline.ingest import SourceError, SourceItem, stream_source
from corral.pipeline.listing import Listing
from corral.pipeline.mappers import CropMapper, Described, ImageMapper, Mapper
from corral.pipeline.options import FOLDER_NAME_RULE, check_fields, check_folder_name, option
from corral.pipeline.shards import ShardOutput, ShardReader, ShardWriter, resume_state
from corral.storage.workspace import (
    EmbeddingSet,
    Workspace,
    atomic_write_bytes,
    atomic_write_json,
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
    num_workers: int | None = option(
        None,
        "decode worker processes",
        unset="all cores on CUDA; on CPU half the cores with --detector, else none: whole images decode in idle-priority threads between model calls",
        low=0,
        flag="--workers",
        job="the server decides how many processes it runs",
    )
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
    engine: str = option("local", "who runs the shards: this process, or the actors of a Ray cluster (pip install 'corral[ray]'); see docs/scale-out.md", choices=("local", "ray"))
    ray_address: str | None = option(
        None,
        "with --engine ray: the cluster to join (host:port of its head, or 'auto')",
        unset="RAY_ADDRESS if set, else a one-machine cluster started for the run",
        job="the server's cluster is its own to choose",
    )
    ray_actors: int | None = option(None, "with --engine ray: embedding actors, each with the model loaded once", unset="one per GPU in the cluster; without GPUs, one per 4 CPUs", low=1)
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
    engine: str = "local"  # who ran the shards: "local", or "ray (N actors)"

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


def decode_threads(cfg: EmbedConfig, device: str) -> int:
    """Threads of this process that decode whole images for a model on the CPU (0: decode worker
    processes do, or with ``num_workers=0`` the model's own thread between batches).

    On a CPU the decoder and the model share the same few cores, and decoding is CPU time the model
    then lacks (a 640x480 JPEG about 5 ms, EfficientNet-Lite0 about 15.5 ms an image). One thread
    per core, at idle priority while the model runs (they fill its gaps) and at normal priority
    while it waits for a batch (every core decodes it; see :func:`corral.pipeline.feed.thread_loader`).
    The one idle-priority worker process used before left a core unused while the model waited and
    starved outright beside other busy processes. Measured with ``bench/embed.py`` (same rounds):
    docs/scale-out.md. Crops keep their worker processes: CPU detectors run there, and not all of
    them are safe to share between threads.
    """
    if device.startswith("cuda") or cfg.num_workers is not None or cfg.detector:
        return 0
    return cpu_count()


def _check_sidecar(es: EmbeddingSet, d: Described, cfg: EmbedConfig) -> dict[str, Any]:
    side = {
        "model": d.model,
        "weights_hash": d.info.get("weights_hash"),
        "preprocessing": d.preprocessing,
        "dim": d.dim,
        "dtype": cfg.dtype,
        "count": 0,
        "format": "parquet shards part-NNNNN.parquet: id (string), embedding (fixed_size_list); items in part-NNNNN.items.parquet",
        "embedder": d.info,
    }
    keys: tuple[str, ...] = ("model", "weights_hash", "dim", "dtype")
    if d.detector is not None:
        side["detector"] = d.detector
        side["detection"] = {"detector": d.detector_info, "pad": cfg.pad, "min_size": cfg.min_size, "items": "crops; their parent images are items without vectors"}
        keys += ("detector",)
    if es.sidecar_path.exists():
        old = es.sidecar()
        for key in keys:
            if old.get(key) != side[key]:
                raise ValueError(f"embedding set {es.path} was made with {key}={old.get(key)!r}, this run has {side[key]!r}; use another --name (or workspace) for a different model")
        side["count"] = old.get("count", 0)
    return side


def embed(source: str, *, workspace: str | Path | Workspace, config: EmbedConfig | None = None) -> EmbedResult:
    """Embed every image a source names into ``workspace``; resumes where an earlier run stopped.

    The source is listed as a stream (:func:`corral.pipeline.ingest.stream_source`): memory stays
    flat however many items it names. ``config.engine`` picks who runs the shards: this process
    (``local``) or the actors of a Ray cluster (``ray``, :mod:`corral.pipeline.embed_ray`); both
    write the same shards.
    """
    cfg = config or EmbedConfig()  # checked when it was made
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    registry.check_name(cfg.model)  # fail on a bad name before listing a million files
    if cfg.detector:
        from corral.pipeline.detect import resolve_name

        resolve_name(cfg.detector)
    if cfg.engine == "ray":
        from corral.pipeline.embed_ray import require_ray

        require_ray()  # before listing: a missing extra is said at once
    items = stream_source(source, endpoint_url=cfg.endpoint_url)
    try:
        if not len(items):
            raise SourceError(f"{source}: no files to embed (the source is empty, or holds only hidden files); nothing was embedded")
        return embed_items(items, workspace=ws, config=cfg, source=str(source))
    finally:
        items.close()


def embed_items(items: Iterable[SourceItem], *, workspace: Workspace, config: EmbedConfig, source: str = "", embedder: Any = None) -> EmbedResult:
    """The embed stage over the given items (any subset of a source), in the order given.

    ``items`` is a list or a :class:`~corral.pipeline.listing.Listing` (any other iterable is
    listed into one first). ``embedder`` may be passed already built (a service or benchmark that
    keeps one loaded); it must match ``config.model``. One embed run writes a workspace at a time: a
    second one waits for the first (saying so) and then resumes from its finished shards.
    """
    from corral.pipeline.heap import reuse_freed_memory
    from corral.storage.wslock import workspace_lock

    if not isinstance(items, (list, tuple, Listing)):
        items = Listing(items)
    with workspace_lock(workspace.ensure().root / ".embed.lock", what="embed"):
        if config.engine == "ray":
            from corral.pipeline.embed_ray import run_ray

            return run_ray(items, workspace=workspace, config=config, source=source)
        # Each batch's activations reuse the memory the last batch freed (see corral.pipeline.heap).
        with reuse_freed_memory():
            return _run_local(items, workspace=workspace, config=config, source=source, embedder=embedder)


def build_mapper(cfg: EmbedConfig, *, device: str, embedder: Any = None) -> tuple[Mapper, dict[str, Any]]:
    """The mapper this config asks for on ``device`` (the embedder built unless given), with the
    settings it resolved for this machine (batch, decode workers, GPU decoding)."""
    if embedder is None:
        embedder = registry.create_embedder(cfg.model, weights=cfg.weights, allow_random=cfg.random_weights, compile=cfg.compile, offline=cfg.offline or None)
    embedder = embedder.to(device)
    batch, workers, gpu_decode = _resolve(cfg, device)
    threads = decode_threads(cfg, device)
    if threads:
        workers = 0
    resolved = {"batch_size_resolved": batch, "num_workers_resolved": workers, "decode_threads_resolved": threads, "gpu_decode_resolved": gpu_decode}
    detector, crop_opts, detector_why = _build_detector(cfg, embedder, device)
    common = {"device": device, "batch": batch, "max_pixels": cfg.max_pixels, "endpoint_url": cfg.endpoint_url}
    if detector is None:
        return ImageMapper(embedder, gpu_decode=gpu_decode, decode_ahead=cfg.decode_ahead, **common), resolved
    return CropMapper(embedder, detector, crop_opts, detector_options=_detector_options(cfg), why=detector_why, **common), resolved


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


def open_set(ws: Workspace, cfg: EmbedConfig, d: Described) -> tuple[EmbeddingSet, dict[str, Any]]:
    """The embedding set a run writes (left-over temporary files swept) and its checked sidecar."""
    default_name = safe_name(d.model.replace("timm:", ""))
    if d.detector is not None:
        default_name = safe_name(f"{default_name}__{d.detector}")  # crops never share a set with whole images
    es = ws.embedding_set(cfg.name or default_name)
    es.path.mkdir(parents=True, exist_ok=True)
    for tmp in es.path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    sidecar = _check_sidecar(es, d, cfg)
    atomic_write_json(es.sidecar_path, sidecar)
    return es, sidecar


def run_record(cfg: EmbedConfig, d: Described, *, source: str, es: EmbeddingSet, extra: dict[str, Any]) -> dict[str, Any]:
    """The resolved config a run leaves in ``runs/``."""
    out = {**asdict(cfg), **extra, "source": source, "embedding_set": str(es.path), "embedder": d.info}
    if d.detector is not None:
        out.update(detector_resolved=d.detector, detector_reason=d.detector_reason, detector_info=d.detector_info, crop_options=d.crop_options)
    return out


def finish(ws: Workspace, run_path: Path, run_cfg: dict[str, Any], res: EmbedResult) -> EmbedResult:
    _write_skipped(ws)
    atomic_write_json(run_path, {"config": run_cfg, "status": "complete", "result": asdict(res)})
    return res


def result(
    reader: ShardReader, writer: ShardWriter, d: Described, *, es: EmbeddingSet, seconds: float, timings: dict[str, float], device: str, detection: dict[str, Any], engine: str = "local"
) -> EmbedResult:
    c = writer.counts
    return EmbedResult(
        items=reader.total,
        embedded=c["ok"] if d.detector is None else c["crops"],
        duplicates=c["duplicate"],
        skipped=c["skipped"],
        skipped_by_reason=dict(sorted(writer.reasons.items())),
        already_done=reader.already_done,
        model=d.model,
        dim=d.dim,
        seconds=seconds,
        embeddings=str(es.path),
        timings={k: round(v, 3) for k, v in timings.items()},
        device=device,
        detection=detection,
        engine=engine,
    )


def _run_local(items: Iterable[SourceItem], *, workspace: Workspace, config: EmbedConfig, source: str, embedder: Any) -> EmbedResult:
    """The local engine: one process, decode worker processes (on a CPU, decode threads), the model
    on one device."""
    import torch

    cfg = config
    t_start = time.perf_counter()
    ws = workspace.ensure()
    device, why = pick_device(cfg.device)
    logger.info("device %s (%s)", device, why)
    mapper, resolved = build_mapper(cfg, device=device, embedder=embedder)
    d = mapper.describe()
    es, sidecar = open_set(ws, cfg, d)
    # What earlier runs finished: their uris are skipped, their ids count as seen for de-duplication.
    done, seen, next_shard = resume_state(es)
    reader = ShardReader(items, done=done, shard_size=cfg.shard_size, first_index=next_shard)
    workers, threads = resolved["num_workers_resolved"], resolved["decode_threads_resolved"]
    batch, gpu_decode = resolved["batch_size_resolved"], resolved["gpu_decode_resolved"]
    how = f"{threads} decode threads" if threads else f"{workers} decode workers"
    logger.info("%d items, %d done earlier, %d to embed; batch %d, %s, gpu_decode=%s", reader.total, reader.already_done, reader.todo, batch, how, gpu_decode)
    run_cfg = run_record(cfg, d, source=source, es=es, extra={"device_resolved": device, "device_reason": why, **resolved})
    run_path = ws.runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-embed.json"
    atomic_write_json(run_path, {"config": run_cfg, "status": "running"})

    timings = dict.fromkeys(mapper.timing_keys, 0.0)
    writer = ShardWriter(es, sidecar, dim=d.dim, dtype=np.float16 if cfg.dtype == "float16" else np.float32)
    if reader.todo:
        stream = ShardStream(reader.shards, mapper.dataset, mapper.collate, mapper.read_batch)
        loader: Any
        if threads:
            loader = thread_loader(stream, threads=threads)
        else:
            loader = stream_loader(stream, workers=workers, pin_memory=device.startswith("cuda"), nice=0 if device.startswith("cuda") else 10)
        bar = _progress(reader.todo, cfg.progress)

        def write(index: int, out: ShardOutput) -> None:
            timings["write_s"] += writer.write(index, out)

        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        try:
            run_batches(mapper, loader, seen=seen, timings=timings, on_shard=write, on_batch=bar.update, dtype=writer.dtype, sync=sync)
        finally:
            if threads:
                loader.close()  # on an error too: the decode threads stop before the run returns
        bar.close()
    res = result(reader, writer, d, es=es, seconds=time.perf_counter() - t_start, timings=timings, device=device, detection=mapper.summary())
    return finish(ws, run_path, run_cfg, res)


def run_batches(mapper: Mapper, loader: Any, *, seen: dict[str, str], timings: dict[str, float], on_shard: Any, on_batch: Any, dtype: Any, sync: Any = None) -> None:
    """The runner: batches from ``loader`` through ``mapper``, each shard handed to ``on_shard(index,
    output)`` when its last batch is done; read (``wait_s``), infer and write are timed apart."""
    out = ShardOutput()
    t_wait = time.perf_counter()
    for b, extra in mapper.batches(loader, timings):
        timings["wait_s"] += time.perf_counter() - t_wait
        recs = b["records"]
        timings["decode_worker_s"] += sum(r.pop("decode_s", 0.0) for r in recs)
        sources = b.get("sources", {})
        t0 = time.perf_counter()
        m = mapper.map(b, extra, seen=seen, sources=sources, timings=timings)
        if sync:
            sync()
        timings["infer_s"] += time.perf_counter() - t0
        out.add(m.vectors, m.rows, m.ids, m.items, dtype)
        on_batch(m.items)
        if b["last"]:
            on_shard(b["shard"], out)
            out = ShardOutput()
        t_wait = time.perf_counter()


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
