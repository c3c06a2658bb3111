"""Scoring candidate partitions: which cut of HDBSCAN's tree to keep.

Two judges, used in turn by :func:`corral.pipeline.cluster.cluster_points`:

- **modularity** on the neighbour graph ranks the cuts of one tree (``min_cluster_size`` from 5
  to n/4, ``eom`` and ``leaf``). It finds the level where the graph falls apart into groups
  (MNIST's 10 digits, COIL-20's 20 objects) but, through its resolution limit, merges classes of
  a dozen items among thousands.
- the **silhouette in the embedding space** (cosine, on a seeded sample) then decides between
  the modularity cut and HDBSCAN's finest cuts (``min_cluster_size`` 5): measured on the
  embeddings themselves, it prefers the finest cut exactly where the classes are small
  (COIL-100 subset, 18 views per object; ORL, 10 photos per person) and the modularity cut where
  they are large.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Items in the silhouette's sample (its cost grows with the square of this).
SILHOUETTE_SAMPLE = 2500


def candidate_sizes(n: int, count: int = 20) -> list[int]:
    """``min_cluster_size`` values tried when none is given: 5 to n/4, geometrically spaced."""
    hi = max(5, n // 4)
    return sorted({int(round(v)) for v in np.geomspace(5, hi, count)} | {5})


def coords_graph(x: np.ndarray, *, k: int) -> Any:
    """A symmetric 0/1 kNN graph of ``x`` (for scoring cuts when no other graph is given)."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    n = x.shape[0]
    _, j = cKDTree(x).query(x, k=k + 1)
    rows = np.repeat(np.arange(n), k)
    g = sp.coo_matrix((np.ones(n * k), (rows, j[:, 1:].reshape(-1))), shape=(n, n)).tocsr()
    return g.maximum(g.T).tocoo()


def modularity(graph: Any, labels: np.ndarray) -> float:
    """Newman's modularity of a partition of a weighted symmetric graph (noise: its own group)."""
    g = graph.tocoo()
    total = float(g.data.sum())
    if total <= 0:
        return 0.0
    lab = np.asarray(labels, np.int64)
    lab = np.where(lab < 0, lab.max() + 1, lab)
    same = lab[g.row] == lab[g.col]
    deg = np.bincount(g.row, weights=g.data, minlength=lab.size)
    dc = np.bincount(lab, weights=deg)
    return float(g.data[same].sum() / total - np.square(dc / total).sum())


def silhouette_judge(vectors: np.ndarray, *, seed: int | None = 0, sample: int = SILHOUETTE_SAMPLE) -> Callable[[np.ndarray], float]:
    """A function scoring a labelling of all ``n`` items by the mean cosine silhouette of a sample.

    The sample's distance matrix is computed once; each call costs one ``[s, s] x [s, k]``
    product. Labels below 0 form one group of their own.
    """
    v = np.asarray(vectors, np.float32)
    n = v.shape[0]
    rng = np.random.default_rng(0 if seed is None else seed)
    rows = np.sort(rng.choice(n, min(n, sample), replace=False))
    s = v[rows].astype(np.float64)
    norms = np.linalg.norm(s, axis=1, keepdims=True)
    s /= np.where(norms > 0, norms, 1.0)
    dist = np.maximum(1.0 - s @ s.T, 0.0)

    def score(labels: np.ndarray) -> float:
        lab = np.asarray(labels, np.int64)[rows]
        lab = np.where(lab < 0, lab.max() + 1, lab)
        _, lab = np.unique(lab, return_inverse=True)
        k = int(lab.max()) + 1
        if k < 2:
            return -1.0
        m = lab.size
        onehot = np.zeros((m, k))
        onehot[np.arange(m), lab] = 1.0
        sums = dist @ onehot
        count = onehot.sum(0)
        own = sums[np.arange(m), lab] / np.maximum(count[lab] - 1, 1)
        other = sums / np.maximum(count, 1)
        other[np.arange(m), lab] = np.inf
        nearest = other.min(1)
        width = np.maximum(own, nearest)
        sil = np.where((count[lab] > 1) & (width > 0), (nearest - own) / np.where(width > 0, width, 1.0), 0.0)
        return float(sil.mean())

    return score
