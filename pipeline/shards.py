"""The embed stage's reader and writer: what is left to do, cut into shards, and a shard on disk.

The **reader** (:class:`ShardReader`) takes a source's items in order, drops those finished by an
earlier run (their uri is in a complete shard, with the same size), and cuts the rest into shards
of ``shard_size`` items, numbered after the last complete shard. It streams: a shard's items are in
memory only while that shard is handed out. What it keeps for the whole run is the resume state
(finished uris with their sizes) and the de-duplication state (:class:`Seen`: the first uri of each
content id embedded so far).

The **writer** (:class:`ShardWriter`) writes one shard: the vectors' Parquet file, then the items
file, each atomically (temporary name, fsync, rename). The items file is the shard's completion
marker, so a shard on disk is whole or absent, never half; a killed run resumes after the last
complete one. One process writes (the local run itself, or the Ray engine's driver).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corral.pipeline.ingest import SourceItem
from corral.storage.workspace import EmbeddingSet, atomic_write_json, atomic_write_table, embedding_table, items_table


@dataclass
class Shard:
    """One unit of work: ``items`` (in order) to be written as shard number ``index``."""

    index: int
    items: list[SourceItem]


@dataclass
class ShardOutput:
    """What a shard's items became: item rows (crops included), and the vectors of ``ids``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # one block per batch
    items: int = 0  # source items covered (a crop run writes more rows than that)

    def add(self, vectors: np.ndarray, rows: list[dict[str, Any]], ids: list[str], items: int, dtype: Any) -> None:
        self.rows.extend(rows)
        self.items += items
        if ids:
            self.ids.extend(ids)
            self.vectors.append(vectors.astype(dtype, copy=False))

    def matrix(self, dim: int, dtype: Any) -> np.ndarray:
        return np.concatenate(self.vectors) if self.vectors else np.empty((0, dim), dtype=dtype)


def resume_state(es: EmbeddingSet) -> tuple[dict[str, int], dict[str, str], int]:
    """``(finished uri -> size, content id -> first uri, next shard number)`` from the complete shards."""
    import pyarrow.parquet as pq

    done: dict[str, int] = {}
    seen: dict[str, str] = {}
    shards = es.complete_shards()
    for i in shards:
        t = pq.read_table(es.shard_paths(i)[1], columns=["id", "uri", "status", "bytes"])
        for id_, uri, status, size in zip(*(t.column(c).to_pylist() for c in ("id", "uri", "status", "bytes"))):
            done[uri] = size
            if status == "ok":
                seen.setdefault(id_, uri)
    return done, seen, (shards[-1] + 1) if shards else 0


class ShardReader:
    """The items still to embed, in the source's order, cut into :class:`Shard` s.

    ``items`` may be a list or a :class:`~corral.pipeline.listing.Listing`; it is read twice (once
    to count what is left, once to hand out shards; once only on a first run), never copied whole.
    """

    def __init__(self, items: Iterable[SourceItem], *, done: dict[str, int], shard_size: int, first_index: int):
        self.items = items
        self.done = done
        self.shard_size = shard_size
        self.first_index = first_index
        self.total = 0
        self.todo = 0
        if not done and isinstance(items, Sized):  # a first run: nothing to look up, no pass to make
            self.total = self.todo = len(items)
            return
        for it in items:
            self.total += 1
            self.todo += not self.is_done(it)

    def is_done(self, it: SourceItem) -> bool:
        size = self.done.get(it.uri)
        return size is not None and (it.size < 0 or size == it.size)

    @property
    def already_done(self) -> int:
        return self.total - self.todo

    @property
    def num_shards(self) -> int:
        return -(-self.todo // self.shard_size)

    def shards(self) -> Iterator[Shard]:
        buf: list[SourceItem] = []
        k = self.first_index
        for it in self.items:
            if self.is_done(it):
                continue
            buf.append(it)
            if len(buf) == self.shard_size:
                yield Shard(k, buf)
                buf, k = [], k + 1
        if buf:
            yield Shard(k, buf)


def count_rows(rows: Iterable[dict[str, Any]], counts: Counter[str], reasons: Counter[str]) -> None:
    """Add a shard's rows to the run's counts: ``ok`` / ``duplicate`` / ``skipped`` items, ``crops``."""
    for r in rows:
        if r.get("parent_id"):
            counts["crops"] += 1
            continue
        counts[r["status"]] += 1
        if r["status"] == "skipped":
            reasons[r["reason"]] += 1


class ShardWriter:
    """Writes shards of one embedding set and keeps its sidecar's count."""

    def __init__(self, es: EmbeddingSet, sidecar: dict[str, Any], *, dim: int, dtype: Any):
        self.es = es
        self.sidecar = sidecar
        self.dim = dim
        self.dtype = dtype
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def write(self, index: int, out: ShardOutput) -> float:
        """Write shard ``index`` (vectors, then items: the completion marker); returns the seconds taken."""
        t0 = time.perf_counter()
        emb_path, items_path = self.es.shard_paths(index)
        atomic_write_table(emb_path, embedding_table(out.ids, out.matrix(self.dim, self.dtype)))
        atomic_write_table(items_path, items_table(out.rows))  # completion marker, last
        self.sidecar["count"] += len(out.ids)
        atomic_write_json(self.es.sidecar_path, self.sidecar)
        count_rows(out.rows, self.counts, self.reasons)
        return time.perf_counter() - t0
