"""Work queues the learning loop derives from one round (:class:`corral.pipeline.learn.LearnResult`).

* **hard items**: unlabelled items the model is least sure between two labels (small margin between
  its top two probabilities) in dense parts of the map, where one answer teaches it about many
  neighbours;
* **label issues**: named items whose label disagrees with what the rest of the labels say about
  them, found by cleanlab from the out-of-fold probabilities (the library's own method, not ours);
* **near-duplicates**: groups of items whose embeddings are almost the same (cosine distance below a
  threshold), which a curator may want to name together or drop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Cosine distance (1 - cos) under which two items count as near-duplicates. A re-encoded, resized or
#: slightly cropped copy of one photo stays well under it with ImageNet embedders; distinct photos
#: of one object in another pose lie above (tests/pipeline/test_queues.py measures both).
DUPLICATE_DISTANCE = 0.02


@dataclass
class Entry:
    """One item in a queue: its row, a score (higher first) and what the model proposes."""

    row: int
    score: float
    label: str | None  # the model's label for it
    current: str | None = None  # its label now (label issues)


def hard_items(res: Any, *, limit: int = 200) -> list[Entry]:
    """Unlabelled rows by ``(1 - margin) * density``: the least decided items where the map is dense.

    ``margin`` is the gap between the top two probabilities; ``density`` the inverse of the mean
    distance to the kNN neighbours, relative to the collection's median.
    """
    free = np.flatnonzero(~res.labelled)
    if len(free) == 0:
        return []
    p = np.sort(res.proba[free], axis=1)
    margin = p[:, -1] - (p[:, -2] if p.shape[1] > 1 else 0.0)
    spread = res.knn.distances.mean(1)
    density = np.median(spread) / np.maximum(spread[free], 1e-9)
    score = (1.0 - margin) * np.minimum(density, 4.0)
    order = np.argsort(-score, kind="stable")[:limit]
    return [Entry(int(free[j]), float(score[j]), res.classes[int(res.predicted[free[j]])]) for j in order]


def label_issues(res: Any, *, limit: int = 200) -> list[Entry]:
    """Named rows whose label looks wrong, most suspicious first (cleanlab ``find_label_issues`` on the
    out-of-fold probabilities, ranked by self-confidence)."""
    from cleanlab.filter import find_label_issues

    rows = np.flatnonzero(res.labelled)
    y = res.y[rows]
    if len(rows) < 10 or len(np.unique(y)) < 2:
        return []
    # cleanlab wants every class present in pred_probs' columns and in the labels it is given.
    probs = np.clip(res.proba[rows], 1e-6, None)
    probs /= probs.sum(1, keepdims=True)
    # n_jobs=1: cleanlab would otherwise fork a multiprocessing pool from whatever thread runs the
    # round (a server's worker or background thread), and a fork of a process with many threads can
    # hang in the child; its answer is the same for any n_jobs, and the labels are small enough.
    found = find_label_issues(labels=y, pred_probs=probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    out = []
    for j in found[:limit]:
        r = int(rows[j])
        out.append(Entry(r, float(1.0 - probs[j, y[j]]), res.classes[int(probs[j].argmax())], res.classes[int(y[j])]))
    return out


def near_duplicates(knn: Any, *, threshold: float = DUPLICATE_DISTANCE, limit: int = 200) -> list[list[int]]:
    """Groups (connected components) of rows joined by kNN edges under ``threshold`` cosine distance,
    largest first. ``knn.distances`` are Euclidean between L2-normalised vectors (``d^2 = 2 - 2 cos``)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    if not 0 < threshold < 2:
        raise ValueError(f"threshold={threshold!r}: a cosine distance in (0, 2)")
    n = knn.indices.shape[0]
    cos_d = (knn.distances.astype(np.float64) ** 2) / 2.0
    r, c = np.nonzero(cos_d < threshold)
    if len(r) == 0:
        return []
    g = sp.csr_matrix((np.ones(len(r)), (r, knn.indices[r, c])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    sizes = np.bincount(comp)
    groups = [np.flatnonzero(comp == k).tolist() for k in np.flatnonzero(sizes > 1)]
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups[:limit]
