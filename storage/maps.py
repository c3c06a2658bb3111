"""Map folders: the 2-D map of one embedding set, as written by ``corral map``.

Layout of ``workspace/maps/<name>/``::

    points.parquet    id (string), x, y (float32), cluster (int32, -1 = noise),
                      probability (float32, HDBSCAN membership), outlier_score (float32, GLOSH),
                      is_new (bool, placed by ``corral map --update``),
                      c0..c{k-1} (float32) clustering-space coordinates when a clustering space was used
    clusters.parquet  cluster (int32), size (int64), exemplars (list<string>, most central first),
                      cohesion (float32)
    state.npz         what placing new items needs beyond the tables (core distances, cluster
                      density levels); plain numpy arrays, no pickles
    hierarchy.npz     HDBSCAN's condensed cluster tree: node_parent, node_size, node_lambda,
                      node_cluster, cluster_node, point_node (see corral.pipeline.hierarchy);
                      absent in maps made before it existed or whose clustering found no tree
    map.json          resolved parameters, seed, embedding set + model, counts, timings, created_at;
                      written last, so its presence marks the map complete

This module reads and writes those files and imports none of Corral's other packages.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corral.storage.workspace import Workspace, WorkspaceError, atomic_write_bytes, atomic_write_json, atomic_write_table

logger = logging.getLogger(__name__)

POINTS = "points.parquet"
CLUSTERS = "clusters.parquet"
STATE = "state.npz"
HIERARCHY = "hierarchy.npz"
META = "map.json"

#: Fixed columns of points.parquet, in order, with their Arrow types.
POINT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("cluster", pa.int32()),
        ("probability", pa.float32()),
        ("outlier_score", pa.float32()),
        ("is_new", pa.bool_()),
    ]
)

CLUSTER_SCHEMA = pa.schema(
    [
        ("cluster", pa.int32()),
        ("size", pa.int64()),
        ("exemplars", pa.list_(pa.string())),
        ("cohesion", pa.float32()),
    ]
)


@dataclass
class MapData:
    """One map as read from disk."""

    name: str
    path: Path
    points: pa.Table  # see POINT_SCHEMA (+ c0..c{k-1})
    clusters: pa.Table  # see CLUSTER_SCHEMA
    meta: dict[str, Any]  # map.json

    def cluster_coords(self) -> np.ndarray | None:
        """The clustering-space coordinates ``[n, k]`` (float32), or None when the map has none."""
        cols = cluster_columns(self.points.schema.names)
        if not cols:
            return None
        return np.stack([self.points.column(c).to_numpy() for c in cols], axis=1).astype(np.float32, copy=False)


def cluster_columns(names: list[str]) -> list[str]:
    """The ``c0..c{k-1}`` column names present, in order."""
    out: list[str] = []
    while f"c{len(out)}" in names:
        out.append(f"c{len(out)}")
    return out


def points_table(
    *,
    ids: Any,
    xy: np.ndarray,
    cluster: np.ndarray,
    probability: np.ndarray,
    outlier_score: np.ndarray,
    is_new: np.ndarray,
    cluster_coords: np.ndarray | None = None,
) -> pa.Table:
    """The points table in the contract's column order and types."""
    n = len(ids)
    xy = np.asarray(xy, dtype=np.float32).reshape(n, 2)
    cols: dict[str, pa.Array] = {
        "id": pa.array([str(i) for i in ids], type=pa.string()),
        "x": pa.array(xy[:, 0], type=pa.float32()),
        "y": pa.array(xy[:, 1], type=pa.float32()),
        "cluster": pa.array(np.asarray(cluster, dtype=np.int32), type=pa.int32()),
        "probability": pa.array(np.asarray(probability, dtype=np.float32), type=pa.float32()),
        "outlier_score": pa.array(np.asarray(outlier_score, dtype=np.float32), type=pa.float32()),
        "is_new": pa.array(np.asarray(is_new, dtype=bool), type=pa.bool_()),
    }
    if cluster_coords is not None and cluster_coords.size:
        cc = np.asarray(cluster_coords, dtype=np.float32).reshape(n, -1)
        for j in range(cc.shape[1]):
            cols[f"c{j}"] = pa.array(cc[:, j], type=pa.float32())
    return pa.table(cols)


def clusters_table(*, cluster: np.ndarray, size: np.ndarray, exemplars: list[list[str]], cohesion: np.ndarray) -> pa.Table:
    """The clusters table in the contract's column order and types."""
    return pa.table(
        {
            "cluster": pa.array(np.asarray(cluster, dtype=np.int32), type=pa.int32()),
            "size": pa.array(np.asarray(size, dtype=np.int64), type=pa.int64()),
            "exemplars": pa.array(exemplars, type=pa.list_(pa.string())),
            "cohesion": pa.array(np.asarray(cohesion, dtype=np.float32), type=pa.float32()),
        },
        schema=CLUSTER_SCHEMA,
    )


def list_maps(ws: Workspace | str | os.PathLike[str]) -> list[str]:
    """Names of the complete maps in a workspace (those with a ``map.json``), sorted."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if not ws.maps_dir.is_dir():
        return []
    return sorted(p.name for p in ws.maps_dir.iterdir() if (p / META).is_file())


def read_map(ws: Workspace | str | os.PathLike[str], name: str | None = None) -> MapData:
    """Read a map; the most recently written one when ``name`` is None.

    Raises :class:`WorkspaceError` when the workspace has no such map.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    names = list_maps(ws)
    if not names:
        raise WorkspaceError(f"no map in {ws.root}; run `corral map --workspace {ws.root}` first")
    if name is None:
        name = max(names, key=lambda n: (ws.map_dir(n) / META).stat().st_mtime_ns)
    path = ws.map_dir(name)
    if not (path / META).is_file():
        raise WorkspaceError(f"no map {name!r} in {ws.root} (have: {', '.join(names)}); run `corral map --workspace {ws.root}` to make one")
    meta = json.loads((path / META).read_text())
    return MapData(name=path.name, path=path, points=pq.read_table(path / POINTS), clusters=pq.read_table(path / CLUSTERS), meta=meta)


def read_state(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a map's ``state.npz`` (empty when the map has none)."""
    p = Path(path) / STATE
    if not p.is_file():
        return {}
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_hierarchy(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a map's ``hierarchy.npz`` (empty when the map has none)."""
    p = Path(path) / HIERARCHY
    if not p.is_file():
        return {}
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub has allow_pickle: bool beside **kwds, so mypy matches the array dict against it
    return buf.getvalue()


def write_map(
    path: Path,
    *,
    points: pa.Table,
    clusters: pa.Table,
    meta: dict[str, Any],
    state: dict[str, np.ndarray] | None = None,
    hierarchy: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a map folder; ``map.json`` goes last so a reader never finds a half-written map.

    Each file is replaced atomically, so rewriting a map (``--update``) leaves the old complete
    map readable until the new one is in place, file by file. ``hierarchy`` None keeps the
    folder's hierarchy as it is (placing items does not change the tree); an empty one removes it
    (a rebuilt map must not keep the tree of the one it replaces).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    atomic_write_table(path / POINTS, points)
    atomic_write_table(path / CLUSTERS, clusters)
    if state is not None:
        atomic_write_bytes(path / STATE, _npz(state))
    if hierarchy:
        atomic_write_bytes(path / HIERARCHY, _npz(hierarchy))
    elif hierarchy is not None:
        (path / HIERARCHY).unlink(missing_ok=True)
    atomic_write_json(path / META, meta)
    logger.info("map written to %s (%d points, %d clusters)", path, points.num_rows, clusters.num_rows)
