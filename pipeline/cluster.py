"""Clusters on the map: HDBSCAN with membership probabilities and GLOSH outlier scores.

HDBSCAN runs in the clustering space (a UMAP layout of a few dimensions, or the 2-D map) through
fast_hdbscan. Its minimum spanning tree depends only on ``min_samples``, so it is built once
and every candidate ``min_cluster_size`` / ``cluster_selection_method`` is a cheap cut of the
same tree. When those two are left unset, :mod:`corral.pipeline.cutselect` chooses: the cut with the
best modularity on the neighbour graph (cuts within 0.005 of the best are ties, the one with
fewest clusters wins), unless the embeddings' silhouette prefers HDBSCAN's finest cut
(``min_cluster_size`` 5, ``min_samples`` 5), which happens where the classes are small.

Per item: the cluster (``-1`` = noise), HDBSCAN's membership probability and the GLOSH outlier
score. Noise can then be handed to the nearest cluster in clustering space, with a probability
of at most 0.5 so that such items stay recognisable. Placing new items later (``predict``) uses
the saved core distances and density levels, HDBSCAN's approximate-predict rule.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from corral.pipeline.options import check_fields, option

logger = logging.getLogger(__name__)

SELECTION_METHODS = ("eom", "leaf")

#: Above this many items fewer cuts are tried (each costs seconds at millions).
LARGE_COLLECTION = 200_000

#: min_samples when none is given, and for the finest candidate cuts.
DEFAULT_MIN_SAMPLES = 10
FINE_MIN_SAMPLES = 5
FINE_MIN_CLUSTER_SIZE = 5

#: Candidate cuts whose modularity is this close to the best count as ties (fewest clusters wins).
MODULARITY_TOLERANCE = 0.005

#: Probability given to noise items handed to their nearest cluster is at most this.
ASSIGNED_MAX_PROBABILITY = 0.5


@dataclass(frozen=True)
class HdbscanParams:
    """HDBSCAN settings under HDBSCAN's own names (see the hdbscan / fast_hdbscan docs); checked when made."""

    min_cluster_size: int | None = option(None, "smallest cluster", unset="chosen by modularity and silhouette", low=2)
    min_samples: int | None = option(None, "neighbours that define density", unset=f"{DEFAULT_MIN_SAMPLES}, {FINE_MIN_SAMPLES} for the finest candidate cuts", low=1)
    cluster_selection_method: str | None = option(None, "how clusters are picked from the tree", unset="chosen with min_cluster_size", choices=SELECTION_METHODS)
    cluster_selection_epsilon: float = option(0.0, "merge clusters closer than this distance", low=0.0)
    allow_single_cluster: bool = option(False, "let the whole collection be one cluster")

    def __post_init__(self) -> None:
        check_fields(self, "hdbscan ")


@dataclass
class Clustering:
    """The outcome for ``n`` items."""

    labels: np.ndarray  # int32 [n], -1 = noise; clusters numbered by size, largest first
    probabilities: np.ndarray  # float32 [n]
    outlier_scores: np.ndarray  # float32 [n], GLOSH in [0, 1]
    state: dict[str, np.ndarray]  # what ``predict`` needs later (saved as state.npz)
    resolved: dict[str, Any]  # the parameters that ran, choices made included
    candidates: list[dict[str, Any]] = field(default_factory=list)  # every cut tried, with its score
    seconds: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # seconds per stage (tree, scoring, final cut, noise)
    hierarchy: dict[str, np.ndarray] = field(default_factory=dict)  # the condensed cluster tree (corral.pipeline.hierarchy); empty: none

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0


def cluster_points(
    coords: np.ndarray,
    *,
    params: HdbscanParams | None = None,
    graph: Any = None,
    vectors: np.ndarray | None = None,
    assign_noise: bool = True,
    sizes: list[int] | None = None,
    fast_tree: bool = False,
    seed: int | None = 0,
) -> Clustering:
    """HDBSCAN on ``coords`` ``[n, d]``; see the module docstring.

    ``graph`` is the symmetric neighbour graph (scipy sparse ``[n, n]``) that scores candidate
    cuts by modularity; without it one is built from ``coords``. ``vectors`` (the embeddings,
    row-aligned) let the input-space silhouette choose between that cut and the finest ones.
    ``assign_noise`` hands noise items to the nearest cluster (by clustering-space distance) with
    a lowered probability. ``sizes`` are the ``min_cluster_size`` candidates when ``params``
    leaves it unset (default :func:`candidate_sizes`). ``fast_tree`` builds the spanning tree
    from a kNN graph (Kruskal), approximate but several times faster: for interactive splits.
    """
    from fast_hdbscan.hdbscan import compute_minimum_spanning_tree

    from corral.pipeline.cutselect import candidate_sizes, coords_graph, modularity, silhouette_judge
    from corral.pipeline.hierarchy import condensed_hierarchy

    p = params or HdbscanParams()
    x = np.ascontiguousarray(coords, dtype=np.float64)
    n = x.shape[0]
    t0 = time.perf_counter()
    if n < 4 or not np.isfinite(x).all():
        if n >= 4:
            raise ValueError("cluster_points: coordinates hold NaN or infinite values")
        return _one_cluster(n, p, t0)
    ms = min(int(p.min_samples or DEFAULT_MIN_SAMPLES), n - 1)
    trees: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    parts: dict[str, float] = {}

    def timed(key: str, since: float) -> None:
        parts[key] = parts.get(key, 0.0) + time.perf_counter() - since

    def tree_for(m: int) -> tuple[np.ndarray, np.ndarray]:
        if m not in trees:
            t_tree = time.perf_counter()
            if fast_tree:
                mst, _, core = compute_minimum_spanning_tree(x, min_samples=m, algorithm="kruskal", knn_k=min(n - 1, max(2 * m, 15)))
            else:
                mst, _, core = compute_minimum_spanning_tree(x, min_samples=m)
            trees[m] = (mst, np.asarray(core, np.float64))
            timed("tree", t_tree)
        return trees[m]

    linkages: dict[int, np.ndarray] = {}
    memo: dict[tuple, tuple[np.ndarray, np.ndarray, Any]] = {}

    def cut(m: int, method: str, mcs: int, single: bool = False, keep: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
        """One cut of the ``min_samples=m`` tree. The sorted tree and its single-linkage tree are
        the same for every cut (a 3-key sort of n edges: most of a cut's time at millions), so
        they are made once; ``keep`` remembers the whole result for a later call."""
        key = (m, method, mcs, single)
        if key in memo:
            return memo[key]
        if m not in linkages:
            linkages[m] = linkage_of(tree_for(m)[0])
        out = cut_linkage(linkages[m], n, min_cluster_size=mcs, method=method, allow_single_cluster=p.allow_single_cluster or single, epsilon=float(p.cluster_selection_epsilon))
        if keep:
            memo[key] = out
        return out

    neighbours: list[np.ndarray] = []

    def filled(labels: np.ndarray) -> np.ndarray:
        """Noise takes the label of its nearest clustered neighbour (among 16): a quick stand-in
        for the exact assignment, for scoring candidates."""
        if not assign_noise:
            return labels
        if not neighbours:
            from scipy.spatial import cKDTree

            neighbours.append(cKDTree(x).query(x, k=min(16, n - 1) + 1, workers=-1)[1][:, 1:])
        out = labels.copy()
        for _ in range(3):
            noise = np.where(out < 0)[0]
            if noise.size == 0:
                break
            near = out[neighbours[0][noise]]
            ok = near >= 0
            has = ok.any(1)
            if not has.any():
                break
            out[noise[has]] = near[has, ok[has].argmax(1)]
        return out

    if p.min_cluster_size:
        sizes = [int(p.min_cluster_size)]
    else:
        sizes = sorted({min(int(s), n) for s in (sizes or candidate_sizes(n, 20 if n <= LARGE_COLLECTION else 6))})
    methods = [p.cluster_selection_method] if p.cluster_selection_method else list(SELECTION_METHODS)
    candidates: list[dict[str, Any]] = []
    chosen_by = "given"
    choice = (ms, methods[0], sizes[0])
    if len(sizes) * len(methods) > 1:
        tree_for(ms)
        t_score, tree_before = time.perf_counter(), parts.get("tree", 0.0)
        graph = graph if graph is not None else coords_graph(x, k=min(15, n - 1))
        for method in methods:
            for mcs in sizes:
                labels = cut(ms, method, mcs)[0]
                q = modularity(graph, filled(labels))
                candidates.append(
                    {
                        "min_samples": ms,
                        "cluster_selection_method": method,
                        "min_cluster_size": mcs,
                        "clusters": int(labels.max()) + 1,
                        "noise_fraction": round(float(np.mean(labels < 0)), 4),
                        "modularity": round(q, 5),
                    }
                )
        # Cuts within MODULARITY_TOLERANCE of the best are equally good; the one with fewest clusters wins.
        top = max(c["modularity"] for c in candidates)
        near = [c for c in candidates if c["modularity"] >= top - MODULARITY_TOLERANCE and c["clusters"] > 0] or candidates
        best = min(near, key=lambda c: (c["clusters"], -c["modularity"]))
        choice, chosen_by = (ms, best["cluster_selection_method"], best["min_cluster_size"]), "modularity"
        if vectors is not None and p.min_cluster_size is None and p.cluster_selection_method is None and n >= 4 * FINE_MIN_CLUSTER_SIZE:
            # Modularity merges small classes (its resolution limit); HDBSCAN's finest cuts do not,
            # but over-split large ones. The embeddings' own silhouette decides between them.
            # (Above LARGE_COLLECTION items the finest cuts reuse the tree rather than build another.)
            fine_ms = min(ms, FINE_MIN_SAMPLES) if p.min_samples is None and n <= LARGE_COLLECTION else ms
            options = [choice, (fine_ms, "eom", FINE_MIN_CLUSTER_SIZE), (fine_ms, "leaf", FINE_MIN_CLUSTER_SIZE)]
            judge = silhouette_judge(vectors, seed=seed)
            scored = []
            for opt in options:
                labels = cut(*opt, keep=True)[0]
                s = judge(filled(labels)) if labels.max() >= 1 else -1.0
                scored.append((s, opt))
                candidates.append({"min_samples": opt[0], "cluster_selection_method": opt[1], "min_cluster_size": opt[2], "clusters": int(labels.max()) + 1, "silhouette": round(s, 5)})
            s_best, choice = max(scored, key=lambda t: t[0])
            for k in [k for k in memo if k[:3] != choice]:
                del memo[k]  # only the winner is cut again
            chosen_by = "modularity, then silhouette" if choice == options[0] else "silhouette (finest cut)"
        timed("scoring", t_score)
        parts["scoring"] -= parts.get("tree", 0.0) - tree_before  # trees built for the finest cuts count as trees
    t_final = time.perf_counter()
    ms_c, method, mcs = choice
    labels, probs, tree = cut(ms_c, method, mcs)
    if labels.max() < 0:
        # No cut found two clusters: the collection is one group (HDBSCAN's allow_single_cluster).
        labels, probs, tree = cut(ms_c, method, min(sizes), single=True)
        mcs = min(sizes)
        if labels.max() < 0:
            labels, probs = np.zeros(n, np.int64), np.ones(n, np.float32)
    core = tree_for(ms_c)[1]
    lam, lam_leaf_max = _point_lambdas(tree, n)
    scores = glosh(lam, lam_leaf_max)
    labels, probs = _order_by_size(labels, probs)
    raw = labels.copy()
    hierarchy = condensed_hierarchy(tree, n, raw)
    timed("final_cut", t_final)
    t_noise = time.perf_counter()
    state = {"core_distance": core, "lambda": lam, "lambda_leaf_max": lam_leaf_max, "raw_label": raw.astype(np.int32), "min_samples": np.array(ms_c)}
    if assign_noise and (labels < 0).any() and (labels >= 0).any():
        labels, probs = _assign_noise(x, labels, probs, core)
    timed("noise", t_noise)
    resolved = {
        "min_cluster_size": int(mcs),
        "min_samples": int(ms_c),
        "cluster_selection_method": method,
        "cluster_selection_epsilon": float(p.cluster_selection_epsilon),
        "allow_single_cluster": p.allow_single_cluster,
        "assign_noise": assign_noise,
        "chosen_by": chosen_by,
    }
    secs = time.perf_counter() - t0
    logger.info(
        "HDBSCAN: %d clusters (%s, min_cluster_size %d, min_samples %d, by %s), %.1f%% noise before assignment, %.2fs",
        int(labels.max()) + 1,
        method,
        mcs,
        ms_c,
        chosen_by,
        100 * float(np.mean(raw < 0)),
        secs,
    )
    return Clustering(
        labels=labels.astype(np.int32),
        probabilities=probs.astype(np.float32),
        outlier_scores=scores.astype(np.float32),
        state=state,
        resolved=resolved,
        candidates=candidates,
        seconds=secs,
        parts={k: round(v, 3) for k, v in parts.items()},
        hierarchy=hierarchy,
    )


def linkage_of(mst: np.ndarray) -> np.ndarray:
    """The single-linkage tree of a minimum spanning tree ``[n-1, 3]`` (edges sorted by weight,
    ties by endpoints, as fast_hdbscan sorts them)."""
    from fast_hdbscan.cluster_trees import mst_to_linkage_tree

    order = np.lexsort((mst.T[1], mst.T[0], mst.T[2]))
    return mst_to_linkage_tree(mst[order])


def cut_linkage(linkage: np.ndarray, n: int, *, min_cluster_size: int, method: str, allow_single_cluster: bool = False, epsilon: float = 0.0) -> tuple[np.ndarray, np.ndarray, Any]:
    """HDBSCAN's clusters from a single-linkage tree: ``(labels int64, probabilities float32,
    condensed tree)``; the steps of fast_hdbscan's ``clusters_from_spanning_tree`` after the
    linkage tree, so that several cuts can share one."""
    from fast_hdbscan.cluster_trees import (
        cluster_tree_from_condensed_tree,
        cluster_tree_leaves,
        condense_tree,
        extract_eom_clusters,
        get_cluster_label_vector,
        get_point_membership_strength_vector,
    )

    condensed = condense_tree(linkage, min_cluster_size=min_cluster_size)
    ctree = cluster_tree_from_condensed_tree(condensed)
    if method == "eom":
        selected = extract_eom_clusters(condensed, ctree, max_cluster_size=np.inf, allow_single_cluster=allow_single_cluster)
    elif method == "leaf":
        selected = np.empty(0, dtype=np.int64) if ctree.parent.shape[0] == 0 else cluster_tree_leaves(ctree, n)
    else:
        raise ValueError(f"cluster_selection_method {method!r}: expected eom or leaf")
    if len(selected) > 1 and epsilon > 0.0:
        from fast_hdbscan.cluster_trees import cluster_epsilon_search

        selected = cluster_epsilon_search(selected, ctree, min_epsilon=epsilon)
    labels = get_cluster_label_vector(condensed, selected, epsilon, n_samples=n)
    probs = get_point_membership_strength_vector(condensed, selected, labels)
    return np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float32), condensed


def _one_cluster(n: int, p: HdbscanParams, t0: float) -> Clustering:
    """Fewer than four items: one cluster holding them all (there is no density to speak of)."""
    return Clustering(
        labels=np.zeros(n, np.int32),
        probabilities=np.ones(n, np.float32),
        outlier_scores=np.zeros(n, np.float32),
        state={"core_distance": np.zeros(n), "lambda": np.full(n, np.inf), "lambda_leaf_max": np.full(n, np.inf), "raw_label": np.zeros(n, np.int32), "min_samples": np.array(1)},
        resolved={**asdict(p), "chosen_by": f"{n} items: one cluster"},
        seconds=time.perf_counter() - t0,
    )


def _order_by_size(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters 0.. by size, largest first (ties by old number)."""
    k = int(labels.max()) + 1
    if k <= 0:
        return labels.astype(np.int64), probs
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    out = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    return out, probs


def _point_lambdas(tree: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point: the density level (lambda) where it leaves the tree, and the highest level
    reached inside the cluster it leaves (GLOSH's reference), both capped to finite values."""
    parent = np.asarray(tree.parent, np.int64)
    child = np.asarray(tree.child, np.int64)
    lam = np.asarray(tree.lambda_val, np.float64)
    if parent.size == 0:
        return np.full(n, 1.0), np.full(n, 1.0)
    finite = lam[np.isfinite(lam)]
    cap = (finite.max() * 2.0) if finite.size and finite.max() > 0 else 1.0
    lam = np.where(np.isfinite(lam), lam, cap)
    top = max(int(parent.max()), int(child.max())) + 1
    deaths = np.zeros(top)
    np.maximum.at(deaths, parent, lam)
    # Children carry higher ids than their parents; fold deepest first.
    cl = np.where(child >= n)[0]
    for r in cl[np.argsort(-child[cl])]:
        deaths[parent[r]] = max(deaths[parent[r]], deaths[child[r]])
    pts = np.where(child < n)[0]
    point_lam = np.zeros(n)
    leaf_max = np.zeros(n)
    point_lam[child[pts]] = lam[pts]
    leaf_max[child[pts]] = deaths[parent[pts]]
    return point_lam, leaf_max


def glosh(point_lambda: np.ndarray, leaf_max: np.ndarray) -> np.ndarray:
    """GLOSH outlier score: ``1 - lambda_point / lambda_max`` of the cluster the point leaves."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(leaf_max > 0, 1.0 - point_lambda / leaf_max, 0.0)
    return np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0)


def nearest_cluster(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every noise item takes the label of its nearest clustered item.

    Returns ``(labels, nearest_index, distance)``; the last two are for the noise items only.
    """
    from scipy.spatial import cKDTree

    noise = labels < 0
    if not noise.any() or noise.all():
        return labels, np.empty(0, np.int64), np.empty(0)
    members = np.where(~noise)[0]
    d, j = cKDTree(x[members]).query(x[noise], k=1)
    out = labels.copy()
    out[noise] = labels[members[j]]
    return out, members[j], d


def _assign_noise(x: np.ndarray, labels: np.ndarray, probs: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out, nb, d = nearest_cluster(x, labels)
    noise = labels < 0
    p = probs.copy()
    # As sure as a member when within the neighbour's own core distance, less the farther out.
    with np.errstate(divide="ignore", invalid="ignore"):
        closeness = np.where(d > 0, np.minimum(1.0, core[nb] / d), 1.0)
    p[noise] = ASSIGNED_MAX_PROBABILITY * closeness
    return out, p


def predict(
    new_coords: np.ndarray,
    *,
    ref_coords: np.ndarray,
    ref_labels: np.ndarray,
    state: dict[str, np.ndarray],
    assign_noise: bool = True,
) -> Prediction:
    """Cluster, probability and outlier score for new items without re-clustering.

    HDBSCAN's approximate predict: the new item's core distance comes from its ``min_samples``
    nearest reference items; it joins the cluster of the reference item it is closest to in
    mutual-reachability distance when it is at least as dense as that cluster's members get
    (else it is noise, or with ``assign_noise`` that cluster's member with probability <= 0.5).
    ``ref_labels`` are the final labels of the reference items; ``state`` is the clustering's.
    """
    from scipy.spatial import cKDTree

    q = np.ascontiguousarray(new_coords, np.float64)
    ref = np.ascontiguousarray(ref_coords, np.float64)
    m = q.shape[0]
    if m == 0:
        return Prediction(np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.float32), _empty_state_rows())
    raw = np.asarray(state["raw_label"], np.int64)
    core = np.asarray(state["core_distance"], np.float64)
    lam = np.asarray(state["lambda"], np.float64)
    leaf = np.asarray(state["lambda_leaf_max"], np.float64)
    ms = int(state.get("min_samples", np.array(DEFAULT_MIN_SAMPLES)))
    k = max(1, min(ms, ref.shape[0]))
    d, j = cKDTree(ref).query(q, k=k)
    d, j = d.reshape(m, k), j.reshape(m, k)
    core_q = d[:, -1]
    mrd = np.maximum(np.maximum(d, core[j]), core_q[:, None])
    best = np.argmin(mrd, axis=1)
    nb = j[np.arange(m), best]
    dist = mrd[np.arange(m), best]
    with np.errstate(divide="ignore"):
        lam_q = np.where(dist > 0, 1.0 / dist, np.inf)
    n_clusters = int(max(raw.max(), np.asarray(ref_labels).max())) + 1 if raw.size else 0
    lam_min = np.full(max(n_clusters, 1), np.inf)
    lam_max = np.zeros(max(n_clusters, 1))
    members = raw >= 0
    np.minimum.at(lam_min, raw[members], lam[members])
    np.maximum.at(lam_max, raw[members], lam[members])
    lab_nb = raw[nb]
    ok = (lab_nb >= 0) & (lam_q >= lam_min[np.maximum(lab_nb, 0)])
    labels = np.where(ok, lab_nb, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        probs = np.where(ok, np.minimum(1.0, lam_q / lam_max[np.maximum(lab_nb, 0)]), 0.0)
        scores = np.clip(np.where(leaf[nb] > 0, 1.0 - np.minimum(lam_q, leaf[nb]) / leaf[nb], 0.0), 0.0, 1.0)
    probs = np.nan_to_num(probs, nan=1.0)
    finite = lam[np.isfinite(lam)]
    cap = finite.max() * 2.0 if finite.size else 1.0
    rows = {"core_distance": core_q, "lambda": np.minimum(lam_q, cap), "lambda_leaf_max": leaf[nb], "raw_label": labels.astype(np.int32)}
    if assign_noise and (labels < 0).any():
        final = np.asarray(ref_labels, np.int64)
        clustered = final >= 0
        if clustered.any():
            idx = np.where(clustered)[0]
            lost = np.where(labels < 0)[0]
            dd, jj = cKDTree(ref[idx]).query(q[lost], k=1)
            labels[lost] = final[idx[jj]]
            with np.errstate(divide="ignore", invalid="ignore"):
                probs[lost] = ASSIGNED_MAX_PROBABILITY * np.where(dd > 0, np.minimum(1.0, core[idx[jj]] / dd), 1.0)
    return Prediction(labels.astype(np.int32), probs.astype(np.float32), np.nan_to_num(scores).astype(np.float32), rows)


@dataclass
class Prediction:
    """What :func:`predict` found for new items."""

    labels: np.ndarray  # int32 [m]
    probabilities: np.ndarray  # float32 [m]
    outlier_scores: np.ndarray  # float32 [m]
    state_rows: dict[str, np.ndarray]  # the new items' rows for the clustering state


def _empty_state_rows() -> dict[str, np.ndarray]:
    return {"core_distance": np.empty(0), "lambda": np.empty(0), "lambda_leaf_max": np.empty(0), "raw_label": np.empty(0, np.int32)}


def extend_state(state: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The clustering state with placed items appended (they become reference items too)."""
    out = dict(state)
    for key, value in rows.items():
        out[key] = np.concatenate([np.asarray(state[key]), np.asarray(value, dtype=np.asarray(state[key]).dtype)])
    return out
