"""Building and updating a workspace's recognition index from its embeddings and label store.

:func:`build_index` makes the index from scratch: every labelled item (and every item excluded
from a label, as a negative) with its vector from the workspace's embedding set, an index of the
chosen FAISS type (trained on a sample when the type needs it, on the GPU when FAISS sees one),
search knobs tuned for a target recall, and the unknown threshold calibrated on a held-out split.
:func:`update_index` brings an existing index up to the label store's current version without a
rebuild: new items are added to the trained index, every row's label is refreshed, and the
threshold is recalibrated; it rebuilds only when too many rows have lost their labels.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.storage.index import EXACT_LIMIT, IndexMeta, LabelIndex, RecognitionIndexError, create_index, recommend_factory, set_search_params, train_index, tune_search, utc_now
from corral.storage.learnt_head import LearntHead
from corral.storage.recognizer import RuleConfig, calibrate, label_baselines
from corral.storage.workspace import EmbeddingSet, Workspace

logger = logging.getLogger(__name__)

#: Fits a learnt head from the index's rows (embedding-space vectors, label or None per row);
#: None when the labels cannot teach one. :func:`corral.pipeline.learnt_index.head_fitter` makes one.
HeadFitter = Callable[[np.ndarray, list[str | None]], LearntHead | None]


@dataclass
class IndexConfig:
    """Options of ``corral index build`` / ``update``."""

    factory: str | None = None  # FAISS index-factory string; None: Flat up to 50k vectors, else IVF-PQ
    embeddings: str | None = None  # embedding set to index (default: the workspace's newest)
    rule: RuleConfig = field(default_factory=RuleConfig)  # decision rule and its calibration
    search: dict[str, float] | None = None  # fixed search knobs (nprobe, efSearch, k_factor_rf) instead of tuning
    target_recall: float = 0.95  # recall@1 against exact search the knobs are tuned for
    rebuild_inactive: float = 0.25  # update() rebuilds when this share of rows has lost its label
    device: str = "auto"  # auto (GPU when FAISS sees one) or cpu
    center: bool = True  # subtract the labelled vectors' mean first (spreads similarities apart)
    seed: int = 0

    def validate(self) -> None:
        self.rule.validate()
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall={self.target_recall!r}: expected a share in (0, 1]")
        if not 0 < self.rebuild_inactive <= 1:
            raise ValueError(f"rebuild_inactive={self.rebuild_inactive!r}: expected a share in (0, 1]")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"device={self.device!r}: expected auto or cpu")


@dataclass
class BuildResult:
    mode: str  # full | incremental | unchanged
    path: str
    rows: int
    labelled: int
    negatives: int
    inactive: int
    labels: int
    added: int  # rows added by this run
    missing_vectors: int  # labelled items without a vector in the embedding set
    factory: str
    search: dict[str, Any]
    threshold: float
    suggest_threshold: float | None
    calibration: dict[str, Any]
    labels_version: int
    model: str
    device: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    using: str = "index"  # what names a query: "learnt" (the learnt head with the index's unknown rule) or "index" alone
    head: dict[str, Any] = field(default_factory=dict)  # the learnt head's threshold, labels and how it was fitted

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


def _label_state(ws: Workspace) -> tuple[int, dict[str, str], dict[str, list[str]]]:
    from corral.storage.labels import LabelStore

    store = LabelStore.open(ws)
    try:
        snap = store.snapshot()
    finally:
        store.close()
    return snap.version, {i: v[0] for i, v in snap.items.items()}, {i: list(v) for i, v in snap.exclusions.items()}


def read_vectors(es: EmbeddingSet, wanted: set[str]) -> tuple[list[str], np.ndarray]:
    """Ids and float32 vectors of the wanted items, streaming the shards (first copy wins)."""
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    seen: set[str] = set()
    dim = int(es.sidecar().get("dim") or 0)
    for emb, _ in es.iter_shards():
        if emb.num_rows == 0:
            continue
        shard_ids = emb.column("id").to_pylist()
        take = [j for j, i in enumerate(shard_ids) if i in wanted and i not in seen]
        if not take:
            continue
        col = emb.column("embedding").combine_chunks()
        dim = col.type.list_size
        mat = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        vecs.append(mat[take].astype(np.float32))
        for j in take:
            seen.add(shard_ids[j])
            ids.append(shard_ids[j])
    return ids, (np.concatenate(vecs) if vecs else np.empty((0, dim), np.float32))


def _use_gpu(device: str) -> bool:
    import faiss

    return device == "auto" and faiss.get_num_gpus() > 0


def _train_and_add(index: Any, vectors: np.ndarray, *, gpu: bool, seed: int) -> tuple[Any, float, float, str]:
    """Train (if needed) and fill ``index``; on a GPU when asked and FAISS supports the type."""
    import faiss

    if gpu:
        try:
            g = faiss.index_cpu_to_all_gpus(index)
            t_train = train_index(g, vectors, seed=seed)
            t0 = time.perf_counter()
            g.add(vectors)
            return faiss.index_gpu_to_cpu(g), t_train, time.perf_counter() - t0, "gpu"
        except RuntimeError as e:  # this index type has no GPU version: build on the CPU
            logger.info("building on the CPU: %s", str(e).splitlines()[-1][:160])
    t_train = train_index(index, vectors, seed=seed)
    t0 = time.perf_counter()
    for s in range(0, len(vectors), 100_000):
        index.add(vectors[s : s + 100_000])
    return index, t_train, time.perf_counter() - t0, "cpu"


def _calibrate(idx: LabelIndex, vectors: np.ndarray, rule: RuleConfig) -> None:
    """Threshold, pre-labelling threshold and per-label typical scores, into ``idx.meta.rule``.

    ``vectors`` are the index's rows in its own (centred) space.
    """
    labels = [idx.label_names[c] if c >= 0 else None for c in idx.row_label.tolist()]
    names = idx.label_names
    neg = [[names[c] for c in idx.not_labels.get(r, ())] for r in range(len(labels))]
    active = idx.active_mask()
    rows = np.flatnonzero(active)
    cal = calibrate(vectors[rows], [labels[r] for r in rows], [neg[r] for r in rows], rule=rule)
    threshold = rule.threshold if rule.threshold is not None else cal["threshold"]
    base, default = label_baselines(lambda q, k: idx.search(q, k, transformed=True), vectors, idx.row_label, idx.not_labels, rule=rule, n_labels=len(names))
    in_use = set(idx.row_label[idx.row_label >= 0].tolist())
    idx.meta.rule = {
        **asdict(rule),
        "threshold": threshold,
        "threshold_fixed": rule.threshold is not None,
        "calibrated_threshold": cal["threshold"],
        "suggest_threshold": cal["suggest_threshold"],
        "baselines": {names[c]: round(float(base[c]), 6) for c in sorted(in_use)},
        "baseline_default": round(default, 6),
    }
    idx.meta.calibration = cal["report"]


def build_index(*, workspace: str | os.PathLike[str] | Workspace, config: IndexConfig | None = None, head: HeadFitter | None = None) -> BuildResult:
    """Build the workspace's recognition index from scratch (see the module docstring).

    ``head`` fits the learnt head on the index's labelled rows (``corral index build`` passes the
    curation loop's model, :mod:`corral.pipeline.learnt_index`); without it the index answers alone.
    """
    cfg = config or IndexConfig()
    cfg.validate()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    t_start = time.perf_counter()
    es = ws.default_embedding_set(cfg.embeddings)
    side = es.sidecar()
    version, labels, exclusions = _label_state(ws)
    wanted = set(labels) | set(exclusions)
    if not labels:
        raise RecognitionIndexError(f"no labelled items in {ws.root}; name some clusters in the viewer (or `corral labels import`) before building an index")
    t0 = time.perf_counter()
    ids, vectors = read_vectors(es, wanted)
    t_load = time.perf_counter() - t0
    if not ids:
        raise RecognitionIndexError(f"none of the {len(labels)} labelled items has a vector in embedding set {es.name!r}; embed them first or pick another set with --embeddings")
    dim = int(vectors.shape[1])
    t0 = time.perf_counter()
    learnt = head(vectors, [labels.get(i) for i in ids]) if head is not None else None
    t_head = time.perf_counter() - t0
    center = vectors.mean(axis=0, dtype=np.float64).round(7).astype(np.float32) if cfg.center else None
    if center is not None:
        vectors -= center
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    gpu = _use_gpu(cfg.device)
    factory = cfg.factory or recommend_factory(len(ids), dim, gpu=gpu)
    index = create_index(factory, dim)
    index, t_train, t_add, device = _train_and_add(index, vectors, gpu=gpu, seed=cfg.seed)
    meta = IndexMeta(
        factory=factory,
        dim=dim,
        model=str(side.get("model")),
        weights_hash=side.get("weights_hash"),
        embedding_set=es.name,
        labels_version=version,
        built_at=utc_now(),
        device=device,
        center=None if center is None else [float(x) for x in center],
        detection=_detection_of(side),
    )
    idx = LabelIndex(index, meta, ids, [labels.get(i) for i in ids], [exclusions.get(i, ()) for i in ids])
    idx.head = learnt
    t0 = time.perf_counter()
    if cfg.search:
        set_search_params(index, cfg.search)
        meta.search, meta.tuning = dict(cfg.search), {"fixed": True}
    else:
        tuning = tune_search(index, vectors, target_recall=cfg.target_recall, seed=cfg.seed)
        meta.search, meta.tuning = dict(tuning.get("params", {})), tuning
    t_tune = time.perf_counter() - t0
    t0 = time.perf_counter()
    _calibrate(idx, vectors, cfg.rule)
    t_cal = time.perf_counter() - t0
    meta.build_seconds = round(time.perf_counter() - t_start, 3)
    t0 = time.perf_counter()
    idx.save(ws.index_dir)
    timings = {"load_s": t_load, "head_s": t_head, "train_s": t_train, "add_s": t_add, "tune_s": t_tune, "calibrate_s": t_cal, "save_s": time.perf_counter() - t0}
    logger.info("index of %d rows (%s) built in %.1fs", idx.ntotal, factory, time.perf_counter() - t_start)
    return _result(idx, ws, "full", added=len(ids), missing=len(set(labels) - set(ids)), t_start=t_start, timings=timings)


def update_index(
    *, workspace: str | os.PathLike[str] | Workspace, config: IndexConfig | None = None, recalibrate: bool = True, head: HeadFitter | None = None, add_head: bool = False, drop_head: bool = False
) -> BuildResult:
    """Bring the index up to the label store's version without a rebuild (see the module docstring).

    A missing index, another embedding set or model, or too many inactive rows mean a full build.
    A learnt head is refitted with ``head`` when the index has one (or ``add_head`` asks for one);
    without ``head`` it is dropped when the labels changed, since it would name labels as they were.
    ``drop_head`` removes it.
    """
    cfg = config or IndexConfig()
    cfg.validate()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    t_start = time.perf_counter()
    try:
        idx = LabelIndex.load(ws.index_dir)
    except RecognitionIndexError as e:
        logger.info("no usable index (%s); building one", e)
        return build_index(workspace=ws, config=cfg, head=head)
    had_head = idx.head is not None
    if drop_head or not (had_head or add_head):
        head = None
    head_changes = (drop_head and had_head) or (add_head and not had_head and head is not None)
    es = ws.default_embedding_set(cfg.embeddings or idx.meta.embedding_set)
    side = es.sidecar()
    if es.name != idx.meta.embedding_set or side.get("model") != idx.meta.model or side.get("weights_hash") != idx.meta.weights_hash:
        logger.info("the embedding set or model changed; rebuilding")
        return build_index(workspace=ws, config=cfg, head=head)
    version, labels, exclusions = _label_state(ws)
    if drop_head:
        idx.head = None
    labels_changed = version != idx.meta.labels_version
    if not labels_changed and not cfg.factory and not head_changes:
        return _result(idx, ws, "unchanged", added=0, missing=0, t_start=t_start, timings={})
    wanted = set(labels) | set(exclusions)
    new = wanted - set(idx.ids)
    t0 = time.perf_counter()
    ids, vectors = read_vectors(es, new) if new else ([], np.empty((0, idx.dim), np.float32))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx.add(ids, vectors, [labels.get(i) for i in ids], [exclusions.get(i, ()) for i in ids])
    t_add = time.perf_counter() - t0
    idx.set_rows([labels.get(i) for i in idx.ids], [exclusions.get(i, ()) for i in idx.ids])
    state = idx.row_state()
    if state["rows"] and state["inactive"] / state["rows"] > cfg.rebuild_inactive:
        logger.info("%d of %d rows lost their labels; rebuilding", state["inactive"], state["rows"])
        return build_index(workspace=ws, config=cfg, head=head)
    if idx.meta.factory == "Flat" and idx.ntotal > 2 * EXACT_LIMIT:
        logger.warning("exact index with %d rows: consider `corral index build` to switch to an approximate one", idx.ntotal)
    idx.meta.labels_version = version
    t_cal = t_head = 0.0
    if recalibrate or head is not None:
        all_ids, all_vecs = read_vectors(es, set(idx.ids))
        order = {i: r for r, i in enumerate(all_ids)}
        if len(order) != len(idx.ids):
            raise RecognitionIndexError(f"{len(idx.ids) - len(order)} indexed items no longer have vectors in {es.name!r}; run `corral index build` for a full rebuild")
        rows_vecs = all_vecs[[order[i] for i in idx.ids]]
        if head is not None:
            t0 = time.perf_counter()
            idx.head = head(rows_vecs, [labels.get(i) for i in idx.ids])
            t_head = time.perf_counter() - t0
        if recalibrate:
            t0 = time.perf_counter()
            _calibrate(idx, idx.transform(rows_vecs), _rule_from_meta(idx, cfg))
            t_cal = time.perf_counter() - t0
    elif idx.head is not None and labels_changed:
        logger.warning("the labels changed and no learnt head was fitted: the index answers alone until `corral index build`")
        idx.head = None
    idx.save(ws.index_dir)
    return _result(idx, ws, "incremental", added=len(ids), missing=len(new - set(ids)), t_start=t_start, timings={"load_s": t_load, "add_s": t_add, "head_s": t_head, "calibrate_s": t_cal})


def _rule_from_meta(idx: LabelIndex, cfg: IndexConfig) -> RuleConfig:
    """The rule the index was built with, unless the caller set one explicitly."""
    if cfg.rule != RuleConfig():
        return cfg.rule
    meta_rule = idx.meta.rule or {}
    saved = {k: v for k, v in meta_rule.items() if k in RuleConfig.__dataclass_fields__}
    if not meta_rule.get("threshold_fixed"):
        saved["threshold"] = None  # it was calibrated, so calibrate again
    return RuleConfig(**saved)


def _result(idx: LabelIndex, ws: Workspace, mode: str, *, added: int, missing: int, t_start: float, timings: dict[str, float]) -> BuildResult:
    st = idx.row_state()
    rule = idx.meta.rule or {}
    return BuildResult(
        mode=mode,
        path=str(Path(ws.index_dir)),
        rows=st["rows"],
        labelled=st["labelled"],
        negatives=st["negatives"],
        inactive=st["inactive"],
        labels=st["labels"],
        added=added,
        missing_vectors=missing,
        factory=idx.meta.factory,
        search=dict(idx.meta.search),
        threshold=float(rule.get("threshold") or 0.0),
        suggest_threshold=rule.get("suggest_threshold"),
        calibration=dict(idx.meta.calibration),
        labels_version=idx.meta.labels_version,
        model=idx.meta.model,
        device=idx.meta.device,
        seconds=time.perf_counter() - t_start,
        timings={k: round(v, 3) for k, v in timings.items()},
        using="learnt" if idx.head is not None else "index",
        head={k: v for k, v in (idx.meta.head or {}).items() if k in ("threshold", "combine", "info")} | ({"labels": len(idx.head.classes)} if idx.head is not None else {}),
    )


def _detection_of(side: dict[str, Any]) -> dict[str, Any]:
    """For an embedding set of detector crops: the detector and the crop options it was cut with."""
    if not side.get("detector"):
        return {}
    det = side.get("detection") or {}
    return {"detector": str(side["detector"]), "pad": det.get("pad"), "min_size": det.get("min_size")}
