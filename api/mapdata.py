"""A map as the viewer sees it: points in draw order, packed into a few bytes each.

The server re-orders a map's points by cells of a square grid (row by row, then by y inside a
cell). In that order a rectangle of the map is a handful of contiguous index ranges, which lets
the browser draw and hit-test only what is on screen, and neighbouring points sit together, which
roughly halves the gzip size. The *point index* the viewer and the API speak of is the position
in this order; :class:`MapView` translates between point indices and item ids. Its ``etag``
changes whenever the map files change, and actions carry it so a rebuilt map is never written
through stale indices.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from corral.api.binpack import gzip_bytes, pack
from corral.api.errors import ApiError, Conflict, NotFound
from corral.storage.workspace import Workspace, safe_name

logger = logging.getLogger(__name__)

#: points per grid cell, on average (sets the grid size)
POINTS_PER_CELL = 48
MAP_FILES = ("points.parquet", "clusters.parquet", "hierarchy.npz", "map.json")


def map_etag(map_dir: Path) -> str:
    """A short fingerprint of a map folder's files (size and modification time)."""
    h = hashlib.sha1()
    for f in MAP_FILES:
        try:
            st = (map_dir / f).stat()
        except FileNotFoundError:
            continue
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def spatial_order(qx: np.ndarray, qy: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Order points by grid cell (row-major) then y; returns (order, cell_start[grid*grid+1])."""
    cx = (qx.astype(np.int64) * grid) >> 16
    cy = (qy.astype(np.int64) * grid) >> 16
    cell = cy * grid + cx
    order = np.lexsort((qy, cell))
    starts = np.searchsorted(cell[order], np.arange(grid * grid + 1), side="left").astype(np.uint32)
    return order, starts


def quantize(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] onto 0..65535."""
    scale = 65535.0 / (hi - lo)
    return np.clip(np.rint((v.astype(np.float64) - lo) * scale), 0, 65535).astype(np.uint16)


def _bounds(x: np.ndarray, y: np.ndarray) -> list[float]:
    if x.size == 0:
        return [0.0, 0.0, 1.0, 1.0]
    lo_x, hi_x, lo_y, hi_y = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    # A square box keeps the map's aspect ratio when both axes share 0..65535.
    span = max(hi_x - lo_x, hi_y - lo_y, 1e-6) * 1.02
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    return [cx - span / 2, cy - span / 2, cx + span / 2, cy + span / 2]


@dataclass
class MapView:
    """One map, loaded and re-ordered for the viewer (immutable; a new etag makes a new view)."""

    name: str
    etag: str
    meta: dict[str, Any]
    bounds: list[float]  # xmin, ymin, xmax, ymax of the square the uint16 positions span
    grid: int
    order: np.ndarray  # point index -> row in points.parquet
    ids: pa.Array  # point index -> item id
    qx: np.ndarray
    qy: np.ndarray
    cell_start: np.ndarray
    cluster: np.ndarray  # int32, -1 = noise
    probability: np.ndarray  # float32
    outlier: np.ndarray  # float32
    is_new: np.ndarray  # bool
    clusters: pa.Table
    _sorted_ids: np.ndarray | None = field(default=None, repr=False)
    _sorted_pos: np.ndarray | None = field(default=None, repr=False)
    _blob: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n(self) -> int:
        return int(self.order.shape[0])

    # -- id <-> index ------------------------------------------------------------------------
    def _id_index(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._sorted_ids is None:
                arr = np.asarray(self.ids.to_numpy(zero_copy_only=False)).astype(np.bytes_)
                pos = np.argsort(arr, kind="stable")
                self._sorted_ids, self._sorted_pos = arr[pos], pos.astype(np.int64)
            return self._sorted_ids, self._sorted_pos  # type: ignore[return-value]

    def index_of(self, ids: list[str]) -> np.ndarray:
        """Point index of each id (-1 where the id is not on this map)."""
        if not ids:
            return np.empty(0, dtype=np.int64)
        sids, spos = self._id_index()
        q = np.asarray(ids).astype(np.bytes_)
        at = np.searchsorted(sids, q)
        at_c = np.minimum(at, max(len(sids) - 1, 0))
        hit = (at < len(sids)) & (sids[at_c] == q) if len(sids) else np.zeros(len(q), bool)
        return np.where(hit, spos[at_c], -1)

    def ids_at(self, idx: np.ndarray) -> list[str]:
        return self.ids.take(pa.array(np.asarray(idx, dtype=np.int64))).to_pylist()

    def check_indices(self, values: Any, *, what: str = "indices") -> np.ndarray:
        """Validate point indices from a request: integers in range, de-duplicated."""
        try:
            idx = np.asarray(values, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):  # the request types bound them; callers in code may not
            raise ApiError(f"{what}: expected a list of point indices (integers)") from None
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            bad = int(idx[(idx < 0) | (idx >= self.n)][0])
            raise ApiError(f"{what}: point index {bad} is outside this map (0..{self.n - 1}); reload the map")
        return np.unique(idx)

    def require_etag(self, etag: str | None) -> None:
        if etag is not None and etag != self.etag:
            raise Conflict(f"map {self.name!r} was rebuilt (version {etag} is now {self.etag}); reload the page")

    # -- wire format -------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "kind": "points",
            "map": self.name,
            "etag": self.etag,
            "n": self.n,
            "bounds": self.bounds,
            "grid": self.grid,
            "clusters": int(self.clusters.num_rows),
        }

    def blob(self) -> bytes:
        """The points, gzip-compressed: x, y (uint16), cluster + 1 (uint16/32; 0 = noise), outlier and
        probability (uint8, 0..255), flags (uint8: 1 = new), cell_start (uint32)."""
        with self._lock:
            if self._blob is None:
                top = int(self.cluster.max()) + 1 if self.n else 0
                cdt = np.uint16 if top < 65535 else np.uint32
                cols = [
                    ("x", self.qx),
                    ("y", self.qy),
                    ("cluster", (self.cluster.astype(np.int64) + 1).astype(cdt)),
                    ("outlier", np.clip(np.rint(np.nan_to_num(self.outlier, nan=1.0) * 255), 0, 255).astype(np.uint8)),
                    ("probability", np.clip(np.rint(np.nan_to_num(self.probability, nan=0.0) * 255), 0, 255).astype(np.uint8)),
                    ("flags", self.is_new.astype(np.uint8)),
                    ("cell_start", self.cell_start),
                ]
                self._blob = gzip_bytes(pack(self.header(), cols))
            return self._blob

    def clusters_json(self) -> list[dict[str, Any]]:
        """Clusters with their size, cohesion and exemplars as point indices."""
        t = self.clusters
        cols = {c: t.column(c).to_pylist() for c in t.column_names if c in ("cluster", "size", "cohesion", "exemplars")}
        out = []
        for i in range(t.num_rows):
            ex = cols.get("exemplars", [[]] * t.num_rows)[i] or []
            idx = [int(j) for j in self.index_of(list(ex)[:8]) if j >= 0]
            out.append(
                {
                    "cluster": int(cols["cluster"][i]),
                    "size": int(cols["size"][i]) if "size" in cols else None,
                    "cohesion": None if cols.get("cohesion") is None or cols["cohesion"][i] is None else round(float(cols["cohesion"][i]), 4),
                    "exemplars": idx,
                }
            )
        return out


def build_view(name: str, etag: str, points: pa.Table, clusters: pa.Table, meta: dict[str, Any]) -> MapView:
    """Re-order a map's points for the viewer (see the module docstring)."""
    for required in ("id", "x", "y", "cluster"):
        if required not in points.column_names:
            raise ApiError(f"map {name!r}: points.parquet has no {required!r} column; rebuild it with `corral map`", status=500)
    n = points.num_rows
    x = points.column("x").to_numpy().astype(np.float32, copy=False)
    y = points.column("y").to_numpy().astype(np.float32, copy=False)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        logger.warning("map %s: %d points without finite positions are placed at the corner", name, int((~finite).sum()))
        x, y = np.where(finite, x, np.nan), np.where(finite, y, np.nan)
    b = _bounds(x[finite], y[finite])
    qx, qy = quantize(np.nan_to_num(x, nan=b[0]), b[0], b[2]), quantize(np.nan_to_num(y, nan=b[1]), b[1], b[3])
    grid = int(min(1024, max(1, round(np.sqrt(max(n, 1) / POINTS_PER_CELL)))))
    order, starts = spatial_order(qx, qy, grid)

    def col(c: str, default: Any, dtype: Any) -> np.ndarray:
        if c in points.column_names:
            return points.column(c).to_numpy(zero_copy_only=False).astype(dtype)[order]
        return np.full(n, default, dtype=dtype)

    return MapView(
        name=name,
        etag=etag,
        meta=meta,
        bounds=b,
        grid=grid,
        order=order,
        ids=points.column("id").combine_chunks().take(pa.array(order)),
        qx=qx[order],
        qy=qy[order],
        cell_start=starts,
        cluster=col("cluster", -1, np.int32),
        probability=col("probability", 1.0, np.float32),
        outlier=col("outlier_score", 0.0, np.float32),
        is_new=col("is_new", False, bool),
        clusters=clusters,
    )


class MapRegistry:
    """The maps of a workspace, each loaded once per version of its files."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._views: dict[str, MapView] = {}
        #: item ids no map shows now (detector boxes a curator deleted or replaced); part of the etag
        self.hidden: Callable[[], frozenset[str]] | None = None

    def _etag(self, d: Path) -> tuple[str, frozenset[str]]:
        etag = map_etag(d)
        hidden = self.hidden() if self.hidden is not None else frozenset()
        if hidden:
            etag = f"{etag[:10]}{hashlib.sha1(chr(10).join(sorted(hidden)).encode()).hexdigest()[:6]}"
        return etag, hidden

    def names(self) -> list[str]:
        from corral.storage.maps import list_maps

        return list_maps(self.workspace)

    def get(self, name: str) -> MapView:
        """The current view of map ``name`` (re-read when its files changed)."""
        if name != safe_name(name) or name in (".", ".."):
            raise NotFound(f"no map {name!r}")
        d = self.workspace.map_dir(name)
        if not (d / "points.parquet").is_file():
            raise NotFound(f"no map {name!r}; run `corral map --workspace {self.workspace.root}`")
        etag, hidden = self._etag(d)
        with self._lock:
            v = self._views.get(name)
            if v is not None and v.etag == etag:
                return v
        from corral.storage.maps import read_map

        data = read_map(self.workspace, name)
        keep = [c for c in ("id", "x", "y", "cluster", "probability", "outlier_score", "is_new") if c in data.points.column_names]
        points = data.points.select(keep)
        if hidden:
            import pyarrow.compute as pc

            points = points.filter(pc.invert(pc.is_in(points.column("id"), value_set=pa.array(sorted(hidden), pa.string()))))
        view = build_view(name, etag, points, data.clusters, dict(data.meta))
        logger.info("map %s loaded: %d points, grid %d", name, view.n, view.grid)
        with self._lock:
            self._views[name] = view
        return view

    def summary(self, name: str) -> dict[str, Any]:
        """A map's name, version, size and origin, from its files' headers (no full load)."""
        import json

        import pyarrow.parquet as pq

        d = self.workspace.map_dir(name)
        meta = json.loads((d / "map.json").read_text())
        counts = meta.get("counts") or {}
        etag, hidden = self._etag(d)
        n = int(pq.read_metadata(d / "points.parquet").num_rows)
        if hidden:  # the points the viewer gets: less the crops no map shows now
            ids = pq.read_table(d / "points.parquet", columns=["id"]).column("id").to_pylist()
            n -= len(hidden.intersection(ids))
        return {
            "name": name,
            "etag": etag,
            "n": n,
            "clusters": counts.get("clusters"),
            "created_at": meta.get("created_at"),
            "embeddings": meta.get("embeddings"),
            "model": meta.get("model"),
        }

    def default_name(self) -> str | None:
        """The newest map's name, or None when the workspace has no map yet."""
        names = self.names()
        if not names:
            return None
        return max(names, key=lambda n: os.stat(self.workspace.map_dir(n) / "points.parquet").st_mtime_ns)
