"""The map stage: embeddings in, a 2-D map with clusters out (``corral map``).

kNN graph (:mod:`corral.pipeline.knn`) -> umap-learn's fuzzy graph -> a UMAP layout in ``cluster_dims``
dimensions for clustering and a 2-D one for display (:mod:`corral.pipeline.project`) -> HDBSCAN on the
clustering layout (:mod:`corral.pipeline.cluster`) -> per-cluster size, exemplars and cohesion. The map
folder's format is :mod:`corral.storage.maps`.

:func:`build_map` makes a map from scratch; :func:`update_map` places items embedded since then
onto it without moving any existing point; :func:`corral.pipeline.recluster.recluster` splits a subset.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corral.pipeline.cluster import Clustering, HdbscanParams, cluster_points, extend_state, predict
from corral.pipeline.knn import KNN_METHODS, FaissParams, knn_graph, knn_query
from corral.pipeline.options import FOLDER_NAME_RULE, check_fields, check_folder_name, group, option
from corral.pipeline.project import LAYOUT_BACKENDS, UmapParams, fuzzy_graph, initial_layout, label_target, layout, place
from corral.pipeline.recluster import SubCluster, recluster
from corral.storage.maps import clusters_table, points_table, read_map, read_state, write_map
from corral.storage.workspace import EmbeddingSet, Workspace, WorkspaceError

logger = logging.getLogger(__name__)

#: Up to this many items the clustering space defaults to CLUSTER_DIMS dimensions; beyond, the 2-D map.
CLUSTER_SPACE_MAX_ITEMS, CLUSTER_DIMS = 200_000, 10


@dataclass(frozen=True)
class MapConfig:
    """Options of the map stage, each said once: its default, help and rule live on the field
    (:mod:`corral.pipeline.options`). ``corral map``'s flags, the HTTP map job's options and the
    options table of docs/map.md are made from these fields. UMAP, HDBSCAN and FAISS settings keep
    their libraries' names. Every value is checked when the object is made (``ValueError`` naming
    the parameter, the value and what is allowed); use :func:`dataclasses.replace` to vary one.
    """

    name: str | None = option(None, "map name; it becomes a folder name", unset="the embedding set's name", rule=FOLDER_NAME_RULE)
    umap: UmapParams = group(UmapParams, "UMAP settings by umap-learn's names (the clustering space always uses min_dist 0)", name="UMAP", flags=("n_neighbors", "min_dist"))
    hdbscan: HdbscanParams = group(HdbscanParams, "HDBSCAN settings by HDBSCAN's names", name="HDBSCAN", flags=("min_cluster_size", "min_samples"))
    faiss: FaissParams = group(FaissParams, "FAISS settings of the kNN index by FAISS's names", name="FAISS", flags=("index_factory",))
    cluster_dims: int | None = option(None, "UMAP dimensions to cluster in; 0 clusters on the 2-D map", unset=f"{CLUSTER_DIMS} up to {CLUSTER_SPACE_MAX_ITEMS:,} items, else 0", low=0, high=64)
    knn: str = option("auto", "kNN engine: auto is torch on a GPU, FAISS on the CPU", choices=KNN_METHODS)
    layout: str = option("auto", "layout optimiser: auto is cuML or torch on a GPU, umap-learn on the CPU", choices=LAYOUT_BACKENDS)
    device: str = option("auto", "where to compute: auto picks CUDA when present", pattern=r"auto|cpu|cuda(:[0-9]+)?", rule="auto, cpu, cuda or cuda:N")
    seed: int | None = option(0, "random seed", unset="umap-learn runs its layout in parallel, not reproducibly", low=0)
    assign_noise: bool = option(
        True,
        "hand HDBSCAN's noise to the nearest cluster, with a probability of at most 0.5",
        flag="--keep-noise",
        flag_help="leave HDBSCAN's noise as cluster -1 instead of handing it to the nearest cluster",
    )
    exemplars: int = option(8, "exemplar ids kept per cluster, most central first", low=1)
    target_weight: float = option(0.5, "with labels (--with-labels): their weight against the embeddings, umap-learn's target_weight", low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self)
        check_folder_name(self)

    def resolved_cluster_dims(self, n: int) -> int:
        """Clustering-space dimensions for ``n`` items (0: none; it needs items well beyond its dimensions)."""
        dims = int(self.cluster_dims) if self.cluster_dims is not None else (CLUSTER_DIMS if n <= CLUSTER_SPACE_MAX_ITEMS else 0)
        return dims if n >= 4 * (dims + 1) else 0


@dataclass
class MapResult:
    """What a map run did; :meth:`summary` is the CLI's last line."""

    name: str
    path: Path
    points: int
    clusters: int
    noise_fraction: float
    seconds: dict[str, float]
    new: int = 0  # items placed by an update
    skipped: dict[str, int] = field(default_factory=dict)  # items left out, by reason
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "map": self.name,
            "points": self.points,
            "clusters": self.clusters,
            "noise_fraction": round(self.noise_fraction, 4),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }
        if self.new or self.meta.get("updated"):
            out["new"] = self.new
        if self.skipped:
            out["skipped"] = self.skipped
        return out


# --------------------------------------------------------------------------------------------
# Loading


def load_vectors(es: EmbeddingSet) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Ids and float32 vectors of an embedding set, minus unusable rows: ``(ids, vectors, skipped)``.

    Rows with NaN or infinite values and repeated ids are left out and counted, never fatal.
    Raises :class:`WorkspaceError` when nothing usable is left.
    """
    ids, vecs = es.load(dtype=np.float32)
    skipped: dict[str, int] = {}
    if ids.size == 0:
        raise WorkspaceError(f"embedding set {es.path} holds no vectors; embed some images first (`corral embed SOURCE --workspace ...`)")
    finite = np.isfinite(vecs).all(axis=1)
    if not finite.all():
        skipped["non_finite"] = int((~finite).sum())
        logger.warning("%d of %d vectors in %s hold NaN or infinite values; left off the map", skipped["non_finite"], ids.size, es.path)
    _, first = np.unique(ids, return_index=True)
    unique = np.zeros(ids.size, bool)
    unique[first] = True
    if not unique.all():
        skipped["duplicate_id"] = int((~unique).sum())
    keep = finite & unique
    if not keep.any():
        raise WorkspaceError(f"embedding set {es.path}: none of its {ids.size} vectors is usable ({skipped}); re-embed the images")
    return ids[keep], vecs[keep], skipped


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Building


def build_map(*, workspace: str | Path | Workspace, embeddings: str | None = None, config: MapConfig | None = None, labels: Mapping[str, str] | None = None) -> MapResult:
    """Make (or remake) the map of one embedding set; see the module docstring.

    ``labels`` (item id -> label) lays the map out with them as a partial target (umap-learn's
    semi-supervised mode: unlabelled items stay -1), so what is left separates from what is named;
    ``config.target_weight`` is umap-learn's weight of the labels against the embeddings.
    """
    cfg = config or MapConfig()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.root.is_dir():
        raise WorkspaceError(f"workspace {ws.root} does not exist; run `corral embed SOURCE --workspace {ws.root}` first")
    es = ws.default_embedding_set(embeddings)
    side = es.sidecar()
    ids, vecs, skipped = load_vectors(es)
    n = ids.size
    name = cfg.name or es.name
    t_all = time.perf_counter()
    seconds = {"knn": 0.0, "umap": 0.0, "cluster": 0.0}
    parts: dict[str, float] = {}  # finer: where the umap and cluster seconds went
    dims = cfg.resolved_cluster_dims(n)
    knn_info: dict[str, Any] = {}
    graph = None
    backend = "none"
    if n < 4:
        xy, cc = _tiny_layout(vecs), None
        dims = 0
    else:
        k = min(int(cfg.umap.n_neighbors), n - 1)
        g = knn_graph(vecs, k=k, method=cfg.knn, faiss_params=cfg.faiss, device=cfg.device)
        seconds["knn"] = g.seconds
        knn_info = {"method": g.method, "k": k}
        t0 = time.perf_counter()
        graph = fuzzy_graph(g.indices, g.distances, params=cfg.umap, seed=cfg.seed)
        if labels:
            codes: dict[str | None, int] = {lb: k for k, lb in enumerate(sorted(set(labels.values())))}  # unlabelled items look up None and get -1
            target = np.fromiter((codes.get(labels.get(i), -1) for i in ids.tolist()), np.int64, n)
            graph = label_target(graph, target, target_weight=cfg.target_weight)
        parts["fuzzy_graph"] = time.perf_counter() - t0
        cc, start = None, None
        if dims:
            # One spectral (or PCA) start serves both layouts: the 2-D map starts from its first two axes.
            t1 = time.perf_counter()
            start = initial_layout(graph, data=vecs, n_components=dims, init=cfg.umap.resolved_init(n, dims), seed=cfg.seed)
            parts["initial_layout"] = time.perf_counter() - t1
            cc, backend, parts["layout_cluster_space"] = layout(
                graph, data=vecs, n_components=dims, params=cfg.umap, min_dist=0.0, seed=cfg.seed, backend=cfg.layout, device=cfg.device, knn=(g.indices, g.distances), start=start
            )
        xy, backend, parts["layout_map"] = layout(graph, data=vecs, n_components=2, params=cfg.umap, seed=cfg.seed, backend=cfg.layout, device=cfg.device, knn=(g.indices, g.distances), start=start)
        seconds["umap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    space = cc if cc is not None else xy
    clu = cluster_points(space, params=cfg.hdbscan, graph=graph, vectors=vecs, assign_noise=cfg.assign_noise, seed=cfg.seed)
    seconds["cluster"] = time.perf_counter() - t0
    clusters = summarize(ids, vecs, clu.labels, clu.probabilities, exemplars=cfg.exemplars)
    points = points_table(ids=ids, xy=xy, cluster=clu.labels, probability=clu.probabilities, outlier_score=clu.outlier_scores, is_new=np.zeros(n, bool), cluster_coords=cc)
    noise = float(np.mean(clu.labels < 0)) if n else 0.0
    meta = {
        "name": name,
        "embeddings": es.name,
        "model": side.get("model"),
        "weights_hash": side.get("weights_hash"),
        "dim": int(vecs.shape[1]),
        "seed": cfg.seed,
        "counts": {"points": n, "clusters": clu.n_clusters, "noise_fraction": noise, "noise_fraction_before_assignment": float(np.mean(clu.state["raw_label"] < 0)), "skipped": skipped},
        "params": {
            "umap": asdict(cfg.umap) | {"n_neighbors": knn_info.get("k", cfg.umap.n_neighbors), "init": cfg.umap.resolved_init(n), "n_epochs": cfg.umap.resolved_epochs(n)},
            "hdbscan": clu.resolved,
            "faiss": asdict(cfg.faiss),
            "cluster_dims": dims,
            "cluster_space_min_dist": 0.0,
            "knn": knn_info | {"requested": cfg.knn},
            "layout": {"requested": cfg.layout, "used": backend},
            "device": cfg.device,
            "assign_noise": cfg.assign_noise,
            "exemplars": cfg.exemplars,
        },
        "candidates": clu.candidates,
        "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"total": round(time.perf_counter() - t_all, 3)},
        "seconds_parts": {k: round(v, 3) for k, v in parts.items()} | {f"cluster_{k}": v for k, v in clu.parts.items()},
        "created_at": _now(),
        "updates": [],
    }
    if labels:
        meta["target"] = {"labelled": int(sum(1 for i in ids.tolist() if i in labels)), "labels": len(set(labels.values())), "target_weight": cfg.target_weight}
    path = ws.map_dir(name)
    write_map(path, points=points, clusters=clusters, meta=meta, state=clu.state, hierarchy=clu.hierarchy)
    return MapResult(name=path.name, path=path, points=n, clusters=clu.n_clusters, noise_fraction=noise, seconds=seconds, skipped=skipped, meta=meta)


def _tiny_layout(vecs: np.ndarray) -> np.ndarray:
    """Positions for one to three items: their first two principal axes (no neighbours to speak of)."""
    n = vecs.shape[0]
    if n == 1:
        return np.zeros((1, 2), np.float32)
    x = vecs.astype(np.float64) - vecs.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    xy = u[:, :2] * s[:2]
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    scale = np.abs(xy).max()
    return (xy / scale if scale > 0 else xy).astype(np.float32)


def summarize(ids: np.ndarray, vecs: np.ndarray | None, labels: np.ndarray, probs: np.ndarray, *, exemplars: int = 8) -> Any:
    """The clusters table: size, exemplars (closest to the cluster's mean direction) and cohesion.

    Cohesion is the length of the mean of the members' unit vectors: the mean cosine similarity
    of members to their common direction, 1 for identical items, near 0 for unrelated ones.
    Items without a vector (``vecs`` None) rank by membership probability instead.
    """
    k = int(labels.max()) + 1 if labels.size else 0
    rows_c, rows_s, rows_e, rows_h = [], [], [], []
    unit = None
    if vecs is not None and vecs.size:
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        unit = vecs / np.where(norms > 0, norms, 1.0)
    for c in range(k):
        m = np.where(labels == c)[0]
        if m.size == 0:
            continue
        if unit is not None:
            mean = unit[m].mean(0)
            coh = float(np.linalg.norm(mean))
            score = unit[m] @ (mean / coh if coh > 0 else mean)
        else:
            coh, score = float("nan"), probs[m]
        order = m[np.lexsort((np.arange(m.size), -score))][:exemplars]
        rows_c.append(c)
        rows_s.append(m.size)
        rows_e.append([str(i) for i in ids[order]])
        rows_h.append(coh)
    return clusters_table(cluster=np.array(rows_c, np.int32), size=np.array(rows_s, np.int64), exemplars=rows_e, cohesion=np.array(rows_h, np.float32))


# --------------------------------------------------------------------------------------------
# Updating


def update_map(*, workspace: str | Path | Workspace, embeddings: str | None = None, map_name: str | None = None, config: MapConfig | None = None) -> MapResult:
    """Place items embedded since the map was made onto it; no existing point moves.

    New items get coordinates by UMAP's transform against the saved layouts, and a cluster by
    HDBSCAN's approximate predict; they are marked ``is_new``. The map's own saved parameters
    are used (``config`` contributes only ``knn``, ``faiss`` and ``device``). With nothing new
    the map is left as it is.
    """
    cfg = config or MapConfig()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    es = ws.default_embedding_set(embeddings)
    name = map_name or cfg.name or es.name
    try:
        old = read_map(ws, name)
    except WorkspaceError as e:
        raise WorkspaceError(f"{e}; `--update` places items on an existing map: run `corral map --workspace {ws.root}` without --update first") from None
    meta = old.meta
    side = es.sidecar()
    if meta.get("model") and side.get("model") != meta["model"]:
        raise WorkspaceError(f"map {name!r} was made from {meta['model']} embeddings, set {es.name!r} holds {side.get('model')}; map that set under another --name")
    ids, vecs, skipped = load_vectors(es)
    if meta.get("dim") and vecs.shape[1] != int(meta["dim"]):
        raise WorkspaceError(f"map {name!r} was made from {meta['dim']}-D vectors, set {es.name!r} holds {vecs.shape[1]}-D; map that set under another --name")
    t0 = time.perf_counter()
    point_ids = np.asarray(old.points.column("id").to_pylist(), dtype=object)
    on_map = set(point_ids.tolist())
    fresh = np.array([i not in on_map for i in ids], bool)
    seconds = {"knn": 0.0, "umap": 0.0, "cluster": 0.0}
    labels_old = old.points.column("cluster").to_numpy()
    if not fresh.any():
        logger.info("map %s: no new items to place", name)
        return MapResult(
            name=old.name,
            path=old.path,
            points=len(point_ids),
            clusters=old.clusters.num_rows,
            noise_fraction=float(np.mean(labels_old < 0)),
            seconds=seconds,
            new=0,
            skipped=skipped,
            meta=meta | {"updated": True},
        )
    new_ids, new_vecs = ids[fresh], vecs[fresh]
    # The reference items: map points whose vectors are still in the set, in points order.
    row_of = {i: r for r, i in enumerate(ids.tolist())}
    ref_rows = np.array([row_of.get(i, -1) for i in point_ids], np.int64)
    has_vec = ref_rows >= 0
    if not has_vec.any():
        raise WorkspaceError(f"none of the items on map {name!r} is in embedding set {es.name!r} any more; rebuild the map")
    ref_points = np.where(has_vec)[0]
    params = meta.get("params", {})
    up = _umap_from_meta(params.get("umap", {}))
    k = min(int(params.get("knn", {}).get("k", up.n_neighbors)), ref_points.size)
    idx, dist, method = knn_query(vecs[ref_rows[has_vec]], new_vecs, k=k, method=cfg.knn, faiss_params=cfg.faiss, device=cfg.device)
    idx = ref_points[idx]  # rows of the points table
    seconds["knn"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    seed = meta.get("seed", 0)
    xy_old = np.stack([old.points.column("x").to_numpy(), old.points.column("y").to_numpy()], 1)
    xy_new = place(idx, dist, reference=xy_old, params=up, seed=seed)
    cc_old = old.cluster_coords()
    cc_new = place(idx, dist, reference=cc_old, params=up, min_dist=0.0, seed=seed) if cc_old is not None else None
    seconds["umap"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    state = read_state(old.path)
    space_old = cc_old if cc_old is not None else xy_old
    space_new = cc_new if cc_new is not None else xy_new
    assign = bool(params.get("assign_noise", MapConfig.assign_noise))
    if state and len(state.get("raw_label", [])) == len(point_ids):
        pred = predict(space_new, ref_coords=space_old, ref_labels=labels_old, state=state, assign_noise=assign)
        state = extend_state(state, pred.state_rows)
    else:
        raise WorkspaceError(f"map {name!r} has no usable clustering state ({old.path / 'state.npz'}); rebuild it with `corral map`")
    seconds["cluster"] = time.perf_counter() - t2
    added = points_table(ids=new_ids, xy=xy_new, cluster=pred.labels, probability=pred.probabilities, outlier_score=pred.outlier_scores, is_new=np.ones(new_ids.size, bool), cluster_coords=cc_new)
    points = pa.concat_tables([old.points, added.cast(old.points.schema)])
    all_ids = np.asarray(points.column("id").to_pylist(), dtype=object)
    all_labels = points.column("cluster").to_numpy()
    all_probs = points.column("probability").to_numpy()
    vec_rows = np.array([row_of.get(i, -1) for i in all_ids], np.int64)
    clusters = _summarize_partial(all_ids, vecs, vec_rows, all_labels, all_probs, exemplars=int(params.get("exemplars", MapConfig.exemplars)))
    noise = float(np.mean(all_labels < 0))
    meta = dict(meta)
    meta["counts"] = dict(meta.get("counts", {})) | {
        "points": int(points.num_rows),
        "clusters": int(clusters.num_rows),
        "noise_fraction": noise,
        "new": int(np.sum(points.column("is_new").to_numpy(zero_copy_only=False))),
    }
    meta["updates"] = list(meta.get("updates", [])) + [{"created_at": _now(), "new": int(new_ids.size), "knn": method, "seconds": {k2: round(v, 3) for k2, v in seconds.items()}}]
    write_map(old.path, points=points, clusters=clusters, meta=meta, state=state)
    logger.info("map %s: placed %d new items in %.1fs", name, new_ids.size, sum(seconds.values()))
    return MapResult(
        name=old.name,
        path=old.path,
        points=int(points.num_rows),
        clusters=int(clusters.num_rows),
        noise_fraction=noise,
        seconds=seconds,
        new=int(new_ids.size),
        skipped=skipped,
        meta=meta | {"updated": True},
    )


def _summarize_partial(ids: np.ndarray, vecs: np.ndarray, vec_rows: np.ndarray, labels: np.ndarray, probs: np.ndarray, *, exemplars: int) -> Any:
    """:func:`summarize` when some map items no longer have a vector (they then count, unranked)."""
    if (vec_rows >= 0).all():
        return summarize(ids, vecs[vec_rows], labels, probs, exemplars=exemplars)
    v = np.zeros((ids.size, vecs.shape[1]), np.float32)
    v[vec_rows >= 0] = vecs[vec_rows[vec_rows >= 0]]
    return summarize(ids, v, labels, probs, exemplars=exemplars)


def _umap_from_meta(d: dict[str, Any]) -> UmapParams:
    names = {f.name for f in dataclasses.fields(UmapParams)}
    return UmapParams(**{k: v for k, v in d.items() if k in names})


__all__ = ["MapConfig", "MapResult", "SubCluster", "build_map", "recluster", "update_map", "summarize", "load_vectors", "Clustering"]
