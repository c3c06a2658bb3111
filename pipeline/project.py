"""Projection: UMAP layouts from a precomputed kNN graph, and placing new items on a layout.

The neighbour graph comes from :mod:`corral.pipeline.knn`; umap-learn turns it into its fuzzy graph
(``fuzzy_simplicial_set``) once, and each layout (the 2-D map, the clustering space) optimises
UMAP's objective over that graph. ``backend`` picks the optimiser:

- ``"umap"``: umap-learn's own (numba, CPU).
- ``"torch"``: the same objective, edges and negative samples in batches on a torch device
  (:mod:`corral.pipeline.layout_torch`); the GPU path for collections of millions.
- ``"cuml"``: RAPIDS cuML's UMAP given our kNN graph, where RAPIDS is installed.
- ``"auto"``: cuML if importable with a GPU, else torch on CUDA, else umap-learn.

New items are placed the way ``UMAP.transform`` does it: membership strengths to their nearest
existing items, a weighted-mean start, then a short optimisation that moves only the new points.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from corral.pipeline.options import check_fields, option

logger = logging.getLogger(__name__)

LAYOUT_BACKENDS = ("auto", "umap", "torch", "cuml")
INITS = ("spectral", "pca", "random", "tswspectral")

#: Above this many items the default initialisation is PCA (spectral gets slow at millions).
SPECTRAL_MAX_ITEMS = 200_000

#: Optimisation epochs when none are given: EPOCHS_SMALL up to EPOCHS_SMALL_MAX_ITEMS items, else EPOCHS_LARGE.
EPOCHS_SMALL, EPOCHS_SMALL_MAX_ITEMS, EPOCHS_LARGE = 500, 10_000, 200


@dataclass(frozen=True)
class UmapParams:
    """UMAP settings under umap-learn's own names (see its parameter guide); checked when made."""

    n_neighbors: int = option(15, "neighbourhood size, also the k of the kNN graph: larger keeps more global structure", low=2)
    min_dist: float = option(0.1, "how tightly the 2-D map packs points, the clustering space uses 0", low=0.0, rule="a number from 0 to spread")
    spread: float = option(1.0, "scale of the embedded points, with min_dist", above=0.0)
    n_epochs: int | None = option(None, "optimisation epochs", unset=f"{EPOCHS_SMALL} up to {EPOCHS_SMALL_MAX_ITEMS:,} items, {EPOCHS_LARGE} beyond", low=1)
    learning_rate: float = option(1.0, "initial SGD step", above=0.0)
    init: str | None = option(None, "starting layout", unset=f"spectral up to {SPECTRAL_MAX_ITEMS:,} items, pca beyond", choices=INITS)
    set_op_mix_ratio: float = option(1.0, "1 is the fuzzy union of the directed kNN graph, 0 the intersection", low=0.0, high=1.0)
    local_connectivity: float = option(1.0, "neighbours assumed connected locally", above=0.0)
    repulsion_strength: float = option(1.0, "weight of the negative samples (gamma)", low=0.0)
    negative_sample_rate: int = option(5, "negative samples per positive edge", low=1)

    def __post_init__(self) -> None:
        check_fields(self, "umap ")
        if self.min_dist > self.spread:
            raise ValueError(f"umap min_dist={self.min_dist!r}: must be between 0 and spread ({self.spread})")

    def resolved_init(self, n: int, n_components: int = 2) -> str:
        """The start used for ``n`` items; spectral needs a few times more items than dimensions."""
        init = self.init or ("spectral" if n <= SPECTRAL_MAX_ITEMS else "pca")
        if init in ("spectral", "tswspectral") and n < 4 * (n_components + 1):
            return "pca"
        return init

    def resolved_epochs(self, n: int) -> int:
        return int(self.n_epochs or (EPOCHS_SMALL if n <= EPOCHS_SMALL_MAX_ITEMS else EPOCHS_LARGE))


def ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """UMAP's curve parameters ``a, b`` for ``spread`` and ``min_dist``."""
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(float(spread), float(min_dist))
    return float(a), float(b)


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray, *, params: UmapParams, seed: int | None = 0) -> Any:
    """umap-learn's fuzzy graph (scipy COO, symmetric) from a kNN graph ``[n, k]``."""
    from umap.umap_ import fuzzy_simplicial_set

    n, k = indices.shape
    graph, _, _ = fuzzy_simplicial_set(
        np.empty((n, 1), np.float32),  # only its length is read when the kNN graph is given
        k,
        np.random.RandomState(seed),
        "euclidean",
        knn_indices=np.ascontiguousarray(indices, np.int64),
        knn_dists=np.ascontiguousarray(distances, np.float32),
        set_op_mix_ratio=float(params.set_op_mix_ratio),
        local_connectivity=float(params.local_connectivity),
    )
    return graph.tocoo()


def label_target(graph: Any, target: np.ndarray, *, target_weight: float) -> Any:
    """umap-learn's semi-supervised step on a fuzzy graph: edges between items of different labels are
    weakened (by ``far_dist = 2.5 / (1 - target_weight)``, umap-learn's rule), edges touching an
    unlabelled item (``target`` -1) are left as the embeddings made them; ``target_weight`` in
    [0, 1] (:class:`corral.pipeline.mapping.MapConfig` checks it). Returns the new graph (COO)."""
    from umap.umap_ import discrete_metric_simplicial_set_intersection

    far = 2.5 * (1.0 / (1.0 - target_weight)) if target_weight < 1.0 else 1.0e12
    g = graph.tocoo(copy=True)
    return discrete_metric_simplicial_set_intersection(g, np.ascontiguousarray(target, np.int64), far_dist=far).tocoo()


def resolve_backend(backend: str, *, device: str = "auto") -> str:
    """The optimiser ``backend`` stands for on this machine."""
    if backend not in LAYOUT_BACKENDS:
        raise ValueError(f"layout backend {backend!r}: expected one of {', '.join(LAYOUT_BACKENDS)}")
    if backend != "auto":
        return backend
    if device == "cpu":
        return "umap"
    from corral.pipeline.knn import cuda_available

    if not cuda_available():
        return "umap"
    try:
        import cuml  # noqa: F401
    except ImportError:
        return "torch"
    return "cuml"


def layout(
    graph: Any,
    *,
    data: np.ndarray,
    n_components: int,
    params: UmapParams,
    min_dist: float | None = None,
    seed: int | None = 0,
    backend: str = "auto",
    device: str = "auto",
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, str, float]:
    """Optimise a UMAP layout of ``graph`` in ``n_components`` dimensions.

    ``data`` (the vectors) seeds the spectral start of disconnected pieces and the PCA start;
    ``min_dist`` overrides ``params.min_dist`` (the clustering space uses 0). ``knn`` is the
    kNN graph, which only the cuML backend needs. ``start`` is a ready starting layout (from
    :func:`initial_layout`; its first ``n_components`` columns are used), so that two layouts
    share one spectral decomposition. Returns ``(coords float32 [n, d], backend, seconds)``.
    """
    t0 = time.perf_counter()
    used = resolve_backend(backend, device=device)
    md = params.min_dist if min_dist is None else min_dist
    n = graph.shape[0]
    a, b = ab_params(params.spread, md)
    init = params.resolved_init(n, n_components)
    epochs = params.resolved_epochs(n)
    if used == "cuml":
        out = _cuml_layout(data, knn, n_components=n_components, params=params, min_dist=md, seed=seed, epochs=epochs, init=init)
    elif used == "torch":
        from corral.pipeline.layout_torch import optimize_layout

        start = _first_columns(start, n_components) if start is not None else initial_layout(graph, data=data, n_components=n_components, init=init, seed=seed)
        dev = "cuda" if device == "auto" else device
        out = optimize_layout(
            graph,
            start,
            a=a,
            b=b,
            n_epochs=epochs,
            learning_rate=params.learning_rate,
            repulsion_strength=params.repulsion_strength,
            negative_sample_rate=params.negative_sample_rate,
            seed=seed,
            device=dev,
        )
    else:
        from umap.umap_ import simplicial_set_embedding

        rs = np.random.RandomState(seed)
        out, _ = simplicial_set_embedding(
            data,
            graph.copy(),
            n_components,
            float(params.learning_rate),
            a,
            b,
            float(params.repulsion_strength),
            int(params.negative_sample_rate),
            epochs,
            _first_columns(start, n_components) if start is not None else init,
            rs,
            "euclidean",
            {},
            False,
            {},
            False,
            parallel=seed is None,
        )
    out = np.ascontiguousarray(out, np.float32)
    secs = time.perf_counter() - t0
    logger.info("UMAP %d-D layout of %d items with %s in %.1fs", n_components, n, used, secs)
    return out, used, secs


def initial_layout(graph: Any, *, data: np.ndarray, n_components: int, init: str, seed: int | None) -> np.ndarray:
    """A starting layout scaled to [0, 10] per axis, as umap-learn starts its own."""
    rs = np.random.RandomState(seed)
    n = graph.shape[0]
    if init == "random":
        emb = rs.uniform(-10.0, 10.0, size=(n, n_components))
    elif init in ("spectral", "tswspectral") and n > n_components + 1:
        from umap.spectral import spectral_layout, tswspectral_layout

        fn = spectral_layout if init == "spectral" else tswspectral_layout
        emb = fn(data, graph.tocsr(), n_components, rs)
    else:
        emb = _pca(data, n_components)
    emb = np.asarray(emb, np.float64)
    top = np.abs(emb).max()
    emb = emb * (10.0 / top if top > 0 else 1.0) + rs.normal(scale=1e-4, size=emb.shape)  # as umap-learn's noisy_scale_coords
    lo, hi = emb.min(0), emb.max(0)
    return (10.0 * (emb - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


def _first_columns(start: np.ndarray, n_components: int) -> np.ndarray:
    """The first ``n_components`` columns of a starting layout, rescaled to [0, 10] per axis."""
    s = np.asarray(start, np.float64)[:, :n_components]
    lo, hi = s.min(0), s.max(0)
    return np.ascontiguousarray(10.0 * (s - lo) / np.where(hi > lo, hi - lo, 1.0), dtype=np.float32)


def _pca(data: np.ndarray, n_components: int) -> np.ndarray:
    x = np.asarray(data, np.float32)
    take = min(x.shape[0], 100_000)
    sample = x[np.random.RandomState(0).choice(x.shape[0], take, replace=False)] if take < x.shape[0] else x
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    comps = vt[:n_components]
    out = (x - mean) @ comps.T
    if out.shape[1] < n_components:
        out = np.pad(out, ((0, 0), (0, n_components - out.shape[1])))
    return out


def _cuml_layout(data: np.ndarray, knn: tuple[np.ndarray, np.ndarray] | None, *, n_components: int, params: UmapParams, min_dist: float, seed: int | None, epochs: int, init: str) -> np.ndarray:
    """cuML's UMAP on our kNN graph (RAPIDS machines only)."""
    import scipy.sparse as sp
    from cuml.manifold import UMAP as CuUMAP

    if knn is None:
        raise ValueError("the cuML layout needs the kNN graph; pass knn=(indices, distances)")
    idx, dist = knn
    n, k = idx.shape
    knn_graph = sp.csr_matrix((dist.reshape(-1), (np.repeat(np.arange(n), k), idx.reshape(-1))), shape=(n, n))
    model = CuUMAP(
        n_neighbors=k,
        n_components=n_components,
        min_dist=min_dist,
        spread=params.spread,
        n_epochs=epochs,
        learning_rate=params.learning_rate,
        init="spectral" if init in ("spectral", "tswspectral") else "random",
        set_op_mix_ratio=params.set_op_mix_ratio,
        local_connectivity=params.local_connectivity,
        repulsion_strength=params.repulsion_strength,
        negative_sample_rate=params.negative_sample_rate,
        random_state=seed,
    )
    return np.asarray(model.fit_transform(data, knn_graph=knn_graph))


# --------------------------------------------------------------------------------------------
# Placing new items


def place(
    indices: np.ndarray,
    distances: np.ndarray,
    *,
    reference: np.ndarray,
    params: UmapParams,
    min_dist: float | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """Coordinates for new items on an existing layout, moving no existing point.

    ``indices``/``distances`` ``[m, k]`` are each new item's nearest reference items (in the
    embedding space); ``reference`` ``[n, d]`` is the existing layout. UMAP's transform: the
    new items start at the membership-weighted mean of their neighbours and are optimised
    against the fixed reference points for a third of the fitting epochs.
    """
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import compute_membership_strengths, make_epochs_per_sample, smooth_knn_dist

    m, k = indices.shape
    ref = np.ascontiguousarray(reference, np.float32)
    if m == 0:
        return np.empty((0, ref.shape[1]), np.float32)
    idx = np.ascontiguousarray(indices, np.int64)
    dist = np.ascontiguousarray(distances, np.float32)
    md = params.min_dist if min_dist is None else min_dist
    a, b = ab_params(params.spread, md)
    sigmas, rhos = smooth_knn_dist(dist, float(k), local_connectivity=max(0.0, float(params.local_connectivity) - 1.0))
    rows, cols, vals, _ = compute_membership_strengths(idx, dist, sigmas, rhos, bipartite=True)
    w = np.asarray(vals, np.float64).reshape(m, k)
    # Weighted-mean start; an exact copy of a reference item starts on it.
    exact = w >= 1.0
    norm = w.sum(1, keepdims=True)
    start = np.einsum("mk,mkd->md", w / np.where(norm > 0, norm, 1.0), ref[idx].astype(np.float64))
    has_exact = exact.any(1)
    if has_exact.any():
        first = exact.argmax(1)
        start[has_exact] = ref[idx[has_exact, first[has_exact]]]
    no_weight = norm[:, 0] <= 0
    start[no_weight] = ref[idx[no_weight, 0]]
    emb = np.ascontiguousarray(start, np.float32)
    epochs = 100 if m <= 10_000 else 30
    if params.n_epochs:
        epochs = max(1, int(params.n_epochs) // 3)
    keep = vals >= vals.max() / float(epochs) if vals.size else vals.astype(bool)
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    if vals.size == 0:
        return emb
    eps = make_epochs_per_sample(vals, epochs)
    rng = np.random.RandomState(seed).randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1, 3).astype(np.int64)
    return np.asarray(
        optimize_layout_euclidean(
            emb,
            ref.copy(),
            rows.astype(np.int32),
            cols.astype(np.int32),
            epochs,
            ref.shape[0],
            eps,
            a,
            b,
            rng,
            float(params.repulsion_strength),
            float(params.learning_rate) / 4.0,
            float(params.negative_sample_rate),
            parallel=False,
            move_other=False,
        ),
        np.float32,
    )
