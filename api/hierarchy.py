"""A map's cluster hierarchy for the viewer: the condensed tree in the map's draw order.

The map folder keeps the tree per row of ``points.parquet`` (:mod:`corral.pipeline.hierarchy`);
the viewer speaks of point indices (positions in the draw order, :mod:`corral.api.mapdata`), so
``point_node`` is re-ordered here and packed with the node arrays into one CRL1 container.
Items placed on the map after it was built have no row in the tree and count through their
cluster.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from corral.api.binpack import gzip_bytes, pack
from corral.api.errors import NotFound
from corral.api.mapdata import MapView
from corral.pipeline.hierarchy import ARRAYS
from corral.storage.maps import read_hierarchy

logger = logging.getLogger(__name__)


def missing(name: str) -> NotFound:
    """The answer for a map that keeps no hierarchy."""
    return NotFound(f"map {name!r} has no cluster hierarchy (it was built before maps kept one, or its clustering found a single group); rebuild it with `corral map` to step clusters up and down")


def hierarchy_blob(view: MapView, map_dir: Path, cache: dict[Any, Any]) -> bytes | None:
    """The gzip-compressed container of ``view``'s hierarchy, or None when the map has none.

    ``cache`` (the app's ``extra``) keeps one answer per map and version.
    """
    key = ("hierarchy", view.name, view.etag)
    if key in cache:
        return cache[key]
    blob = _build(view, map_dir)
    for old in [k for k in cache if isinstance(k, tuple) and k[:2] == ("hierarchy", view.name)]:
        cache.pop(old, None)
    cache[key] = blob
    return blob


def _build(view: MapView, map_dir: Path) -> bytes | None:
    h = read_hierarchy(map_dir)
    if not h or any(a not in h for a in ARRAYS) or h["node_parent"].size == 0:
        return None
    top = int(view.cluster.max()) + 1 if view.n else 0
    if h["cluster_node"].size < top:
        logger.warning("map %s: its hierarchy knows %d clusters, the map has %d; left unused", view.name, h["cluster_node"].size, top)
        return None
    rows = np.asarray(h["point_node"], np.int32)
    by_row = np.full(view.n, -1, np.int32)
    known = min(rows.size, view.n)
    by_row[:known] = rows[:known]
    point_node = by_row[view.order]  # draw order, as every other per-point column
    header = {"kind": "hierarchy", "map": view.name, "etag": view.etag, "n": view.n, "nodes": int(h["node_parent"].size), "clusters": int(h["cluster_node"].size), "root": 0}
    cols = [
        ("node_parent", np.asarray(h["node_parent"], np.int32)),
        ("node_size", np.asarray(h["node_size"], np.int32)),
        ("node_lambda", np.asarray(h["node_lambda"], np.float32)),
        ("node_cluster", np.asarray(h["node_cluster"], np.int32)),
        ("cluster_node", np.asarray(h["cluster_node"], np.int32)),
        ("point_node", point_node),
    ]
    logger.info("hierarchy of map %s: %d nodes", view.name, header["nodes"])
    return gzip_bytes(pack(header, cols))
