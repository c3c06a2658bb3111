"""The workspace: one folder that holds everything Corral knows about a collection.

Layout (all paths relative to the workspace root)::

    embeddings/<name>/                   one embedding set per embedder
        embeddings.json                  sidecar: model, weights hash, preprocessing, dim, dtype, count
        part-00000.parquet               shard: id (string), embedding (fixed_size_list<float32|float16>)
        part-00000.items.parquet         the items that shard covered (see ITEM_COLUMNS); written last,
                                         so its presence marks the shard complete
    maps/<name>/                         a 2-D map (points.parquet, clusters.parquet, map.json)
    labels.sqlite                        the label store
    skipped.csv                          every file an embed run skipped, with the reason
    runs/<timestamp>-<job>.json          resolved config of each job run

Every file is written to a temporary name in the same folder and renamed into place, so a reader
(or a restarted job) never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Columns of an items shard. ``status`` is ``ok``, ``duplicate`` or ``skipped``.
ITEM_COLUMNS = (
    "id",  # content hash of the file bytes (blake2b-128, hex); for crops: hash of parent id + box
    "uri",  # where the bytes came from: a path, or s3://bucket/key
    "status",  # ok | duplicate | skipped
    "reason",  # why it was skipped: one short code (empty otherwise)
    "detail",  # the decoder's or reader's own words for a skip
    "duplicate_of",  # uri of the first copy, for duplicates
    "width",  # decoded width in pixels (0 when skipped)
    "height",  # decoded height in pixels
    "bytes",  # file size
    "label",  # a label that came with the source (manifest `label` column), for later import
    "meta",  # other manifest columns, as a JSON object
    "parent_id",  # crops: id of the image the crop was cut from (empty for whole images)
    "bbox",  # crops: [x, y, width, height] in parent pixels, as JSON (empty for whole images)
)

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


class WorkspaceError(ValueError):
    """A workspace is missing, empty or inconsistent."""


def safe_name(text: str) -> str:
    """A folder name derived from ``text`` (model names hold ``:`` and ``/``)."""
    return _NAME_OK.sub("_", text).strip("._") or "default"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Write a Parquet file atomically (temp file + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def embedding_table(ids: list[str], vectors: np.ndarray) -> pa.Table:
    """The on-disk embedding shard: ``id`` string + ``embedding`` fixed-size list."""
    vectors = np.ascontiguousarray(vectors)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    value_type = pa.float16() if vectors.dtype == np.float16 else pa.float32()
    flat = pa.array(vectors.reshape(-1), type=value_type)
    emb = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.table({"id": pa.array(ids, type=pa.string()), "embedding": emb})


def items_table(rows: list[dict[str, Any]]) -> pa.Table:
    """An items shard from row dicts; missing columns get empty defaults."""
    cols: dict[str, list[Any]] = {c: [] for c in ITEM_COLUMNS}
    for row in rows:
        for c in ITEM_COLUMNS:
            v = row.get(c)
            if c in ("width", "height", "bytes"):
                cols[c].append(int(v or 0))
            elif c in ("meta", "bbox"):
                cols[c].append(v if isinstance(v, str) else (json.dumps(v) if v else ""))
            else:
                cols[c].append("" if v is None else str(v))
    schema = pa.schema([(c, pa.int64() if c in ("width", "height", "bytes") else pa.string()) for c in ITEM_COLUMNS])
    return pa.table(cols, schema=schema)


class EmbeddingSet:
    """One folder of embedding shards plus its sidecar."""

    SIDECAR = "embeddings.json"

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sidecar_path(self) -> Path:
        return self.path / self.SIDECAR

    def sidecar(self) -> dict[str, Any]:
        if not self.sidecar_path.exists():
            raise WorkspaceError(f"embedding set {self.path} has no {self.SIDECAR}; was the embed run finished?")
        return json.loads(self.sidecar_path.read_text())

    def complete_shards(self) -> list[int]:
        """Indices of shards whose items file (the completion marker) exists."""
        out = []
        for p in self.path.glob("part-*.items.parquet"):
            m = re.match(r"part-(\d+)\.items\.parquet$", p.name)
            if m and (self.path / f"part-{m.group(1)}.parquet").exists():
                out.append(int(m.group(1)))
        return sorted(out)

    def shard_paths(self, index: int) -> tuple[Path, Path]:
        return self.path / f"part-{index:05d}.parquet", self.path / f"part-{index:05d}.items.parquet"

    def iter_shards(self) -> Iterator[tuple[pa.Table, pa.Table]]:
        """Yield (embeddings, items) tables shard by shard, streaming."""
        for i in self.complete_shards():
            emb_path, items_path = self.shard_paths(i)
            yield pq.read_table(emb_path), pq.read_table(items_path)

    def items(self) -> pa.Table:
        tables = [pq.read_table(self.shard_paths(i)[1]) for i in self.complete_shards()]
        if not tables:
            return items_table([])
        return pa.concat_tables(tables, promote_options="default")

    def load(self, *, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """All ids and vectors of this set, in shard order: ``(ids[n], vectors[n, dim])``."""
        ids: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        dim = None
        for i in self.complete_shards():
            t = pq.read_table(self.shard_paths(i)[0])
            if t.num_rows == 0:
                continue
            col = t.column("embedding").combine_chunks()
            d = col.type.list_size
            if dim is not None and d != dim:
                raise WorkspaceError(f"embedding set {self.path} mixes dimensions {dim} and {d} (shard {i}); re-embed into a fresh set with one model")
            dim = d
            ids.append(np.asarray(t.column("id").to_numpy(zero_copy_only=False), dtype=object))
            vecs.append(col.values.to_numpy(zero_copy_only=False).reshape(-1, d).astype(dtype, copy=False))
        if not ids:
            return np.empty(0, dtype=object), np.empty((0, 0), dtype=dtype)
        return np.concatenate(ids), np.concatenate(vecs)


class Workspace:
    """Paths and readers for one workspace folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def ensure(self) -> "Workspace":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    # -- embeddings -------------------------------------------------------------------------
    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    def embedding_set(self, name: str) -> EmbeddingSet:
        return EmbeddingSet(self.embeddings_dir / safe_name(name))

    def embedding_sets(self) -> list[EmbeddingSet]:
        if not self.embeddings_dir.is_dir():
            return []
        return [EmbeddingSet(p) for p in sorted(self.embeddings_dir.iterdir()) if (p / EmbeddingSet.SIDECAR).exists()]

    def default_embedding_set(self, name: str | None = None) -> EmbeddingSet:
        """The named set, or the only / most recently written one."""
        if name:
            es = self.embedding_set(name)
            if not es.sidecar_path.exists():
                have = ", ".join(s.name for s in self.embedding_sets()) or "none"
                raise WorkspaceError(f"no embedding set {name!r} in {self.root} (have: {have})")
            return es
        sets = self.embedding_sets()
        if not sets:
            raise WorkspaceError(f"no embeddings in {self.root}; run `corral embed SOURCE --workspace {self.root}` first")
        return max(sets, key=lambda s: s.sidecar_path.stat().st_mtime)

    def items(self) -> pa.Table:
        """Every item any embed run recorded, one row per uri (latest record wins)."""
        tables = [s.items() for s in self.embedding_sets()]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return items_table([])
        t = pa.concat_tables(tables, promote_options="default")
        # keep the last row per uri
        uris = t.column("uri").to_pylist()
        last = {u: i for i, u in enumerate(uris)}
        keep = sorted(last.values())
        return t.take(pa.array(keep, type=pa.int64()))

    # -- other areas ------------------------------------------------------------------------
    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    def map_dir(self, name: str) -> Path:
        return self.maps_dir / safe_name(name)

    @property
    def labels_db(self) -> Path:
        return self.root / "labels.sqlite"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def skipped_path(self) -> Path:
        return self.root / "skipped.csv"
