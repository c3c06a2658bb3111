"""The files that tell the label store which item ids exist: item shards and map points.

The store refuses actions on ids it does not know (a typo, another workspace's ids). Embed and map
runs add items while a server has the store open, so the store looks again before it acts: each
file is marked by its size and modification time, and only files whose mark is new are read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)


def workspace_marks(ws: Workspace) -> dict[str, tuple[Path, str]]:
    """``{path relative to the workspace: (path, "size:mtime_ns")}`` of every complete item shard
    and every map's points file. Files that vanish while being listed are left out."""
    files = [p for s in ws.embedding_sets() for p in s.path.glob("part-*.items.parquet")]
    if ws.maps_dir.is_dir():
        files += [d / "points.parquet" for d in ws.maps_dir.iterdir() if (d / "points.parquet").is_file()]
    out: dict[str, tuple[Path, str]] = {}
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        out[str(p.relative_to(ws.root))] = (p, f"{st.st_size}:{st.st_mtime_ns}")
    return out


def ids_in(path: Path) -> list[str] | None:
    """The usable ids a file lists: an items shard's rows with status ``ok``, or a map's points;
    None when the file cannot be read now (being replaced, damaged: it is tried again next time)."""
    try:
        if path.name == "points.parquet":
            return [i for i in pq.read_table(path, columns=["id"]).column("id").to_pylist() if i]
        t = pq.read_table(path, columns=["id", "status"])
    except (OSError, ValueError, KeyError) as e:
        logger.warning("cannot read the item ids of %s now: %s", path, e)
        return None
    return [i for i, s in zip(t.column("id").to_pylist(), t.column("status").to_pylist()) if s == "ok" and i]
