"""Splitting a selection: HDBSCAN over only the given items (the viewer's "split").

The items keep their places; only their clustering-space coordinates (or, for maps without a
clustering space, their 2-D positions) are re-clustered, so a split of 10,000 items takes well
under a second once numba has compiled fast_hdbscan (:func:`warm_up` does that ahead of time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.pipeline.cluster import HdbscanParams, cluster_points
from corral.storage.maps import cluster_columns, read_map
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: Candidate cluster sizes tried when none is given, as fractions of the selection.
SPLIT_FRACTIONS = (0.02, 0.05, 0.1, 0.2)


@dataclass
class SubCluster:
    """One part of a split selection."""

    ids: list[str]  # member item ids
    exemplars: list[str]  # the most central members, first the most central
    probability: float  # mean membership probability of the members
    size: int = 0
    noise: bool = False  # True for the leftover items when noise is not assigned

    def __post_init__(self) -> None:
        self.size = len(self.ids)


@dataclass
class SplitResult:
    """Sub-clusters of a selection, largest first, plus how they were found."""

    parts: list[SubCluster]
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def recluster(
    *,
    workspace: str | Path | Workspace,
    map_name: str | None,
    ids: list[str] | np.ndarray,
    min_cluster_size: int | None = None,
    assign_noise: bool = True,
    exemplars: int = 5,
) -> list[SubCluster]:
    """Cluster only the items ``ids`` of a map; returns the sub-clusters, largest first.

    ``min_cluster_size`` None tries a few sizes relative to the selection and keeps the split
    with the best modularity on the selection's neighbour graph. Unknown ids are an error that
    names a few of them. A selection of fewer than 4 items comes back as one part.
    """
    return split(workspace=workspace, map_name=map_name, ids=ids, min_cluster_size=min_cluster_size, assign_noise=assign_noise, exemplars=exemplars).parts


def split(
    *,
    workspace: str | Path | Workspace,
    map_name: str | None,
    ids: list[str] | np.ndarray,
    min_cluster_size: int | None = None,
    assign_noise: bool = True,
    exemplars: int = 5,
) -> SplitResult:
    """:func:`recluster` with the parameters it used and its time."""
    t0 = time.perf_counter()
    if min_cluster_size is not None and (not isinstance(min_cluster_size, (int, np.integer)) or min_cluster_size < 2):
        raise ValueError(f"min_cluster_size={min_cluster_size!r}: must be an integer >= 2 (or None to choose it)")
    wanted = [str(i) for i in ids]
    if not wanted:
        raise ValueError("ids: the selection is empty; pass the ids of the items to split")
    m = read_map(workspace, map_name)
    cols = cluster_columns(m.points.schema.names) or ["x", "y"]
    table = m.points.select(["id", *cols])
    all_ids = table.column("id").to_pylist()
    row_of = {i: r for r, i in enumerate(all_ids)}
    missing = [i for i in dict.fromkeys(wanted) if i not in row_of]
    if missing:
        raise ValueError(f"ids: {len(missing)} of {len(wanted)} are not on map {m.name!r} (e.g. {', '.join(missing[:3])}); pass ids from the map's points")
    sel_ids = list(dict.fromkeys(wanted))
    rows = np.fromiter((row_of[i] for i in sel_ids), np.int64, len(sel_ids))
    coords = np.stack([table.column(c).to_numpy()[rows] for c in cols], 1).astype(np.float64)
    n = rows.size
    if n < 4:
        return SplitResult([SubCluster(ids=sel_ids, exemplars=sel_ids[:exemplars], probability=1.0)], {"reason": "fewer than 4 items"}, time.perf_counter() - t0)
    params = HdbscanParams(min_cluster_size=min_cluster_size, min_samples=min(10, n - 1), cluster_selection_method="eom")
    sizes = sorted({max(5, int(round(f * n))) for f in SPLIT_FRACTIONS})
    res = cluster_points(coords, params=params, assign_noise=assign_noise, sizes=sizes, fast_tree=True)
    labels, probs = res.labels, res.probabilities
    if not assign_noise:
        labels = res.state["raw_label"]
    parts = []
    sel = np.asarray(sel_ids, dtype=object)
    for c in range(int(labels.max()) + 1):
        mem = np.where(labels == c)[0]
        if mem.size:
            parts.append(_part(sel, coords, mem, probs, exemplars))
    rest = np.where(labels < 0)[0]
    if rest.size:
        parts.append(_part(sel, coords, rest, probs, exemplars, noise=True))
    if not parts:
        parts = [SubCluster(ids=sel_ids, exemplars=sel_ids[:exemplars], probability=float(np.mean(probs)))]
    parts.sort(key=lambda p: (p.noise, -p.size))
    secs = time.perf_counter() - t0
    logger.info("split of %d items into %d parts in %.3fs", n, len(parts), secs)
    return SplitResult(parts, {**res.resolved, "space": cols}, secs)


def _part(sel: np.ndarray, coords: np.ndarray, mem: np.ndarray, probs: np.ndarray, k: int, noise: bool = False) -> SubCluster:
    centre = coords[mem].mean(0)
    d = np.linalg.norm(coords[mem] - centre, axis=1)
    central = mem[np.argsort(d, kind="stable")[:k]]
    return SubCluster(ids=[str(i) for i in sel[mem]], exemplars=[str(i) for i in sel[central]], probability=float(np.mean(probs[mem])), noise=noise)


def warm_up() -> float:
    """Compile fast_hdbscan's numba code now (seconds spent), so the first split is fast."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(8, 1, (40, 3))])
    cluster_points(pts, params=HdbscanParams(min_samples=5, cluster_selection_method="eom"), sizes=[10, 20], fast_tree=True)
    return time.perf_counter() - t0
