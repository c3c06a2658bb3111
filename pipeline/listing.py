"""A source's items in URI order without holding them all: sorted runs spilled to disk, merged.

The embed stage cuts its work into shards in URI order, so that a rerun cuts the same shards.
Sorting needs every name once, but not all at the same time: :class:`Listing` keeps up to
``chunk`` items in memory, writes each full chunk to a temporary file as a sorted run, and merges
the runs (``heapq.merge``, stable, so equal URIs keep their source order exactly as ``sorted``
does) each time it is iterated. Memory stays at one chunk while listing and one block per run
while reading, however large the collection: a million names took the same peak as a hundred
thousand (``bench/listing.py``). A listing that fits in one chunk never touches the disk.
"""

from __future__ import annotations

import heapq
import os
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from corral.pipeline.ingest import SourceItem

#: Items kept in memory before a sorted run goes to disk (~25 MB of names and sizes).
CHUNK = 65_536
#: Items per pickled block inside a run file (one block per run is in memory while merging).
_BLOCK = 1024


def _key(it: SourceItem) -> str:
    return it.uri


class Listing:
    """Items in URI order; iterable any number of times (also from forked worker processes).

    ``len()`` is the number of items. Temporary files are removed by :meth:`close`, or when the
    object is collected, by the process that made them only.
    """

    def __init__(self, items: Iterable[SourceItem], *, chunk: int = CHUNK, spill_dir: str | os.PathLike[str] | None = None):
        self._memory: list[SourceItem] = []
        self._runs: list[Path] = []
        self._folder: Path | None = None
        self._count = 0
        buf: list[SourceItem] = []
        for it in items:
            buf.append(it)
            if len(buf) >= chunk:
                self._spill(buf, spill_dir)
                buf = []
        buf.sort(key=_key)
        if self._runs and buf:
            self._spill(buf, spill_dir)
        elif buf:
            self._memory = buf
            self._count = len(buf)

    def _spill(self, buf: list[SourceItem], spill_dir: str | os.PathLike[str] | None) -> None:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="corral-listing-", dir=spill_dir))
            self._finalizer = weakref.finalize(self, _remove, self._folder, os.getpid())
        buf.sort(key=_key)
        path = self._folder / f"run-{len(self._runs):05d}.pkl"
        with open(path, "wb") as fh:
            for s in range(0, len(buf), _BLOCK):
                pickle.dump([(it.uri, it.size, it.label, it.meta) for it in buf[s : s + _BLOCK]], fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._runs.append(path)
        self._count += len(buf)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[SourceItem]:
        if not self._runs:
            return iter(self._memory)
        return heapq.merge(*(_read_run(p) for p in self._runs), key=_key)

    @property
    def spilled(self) -> int:
        """How many sorted runs went to disk (0: the listing is in memory)."""
        return len(self._runs)

    def close(self) -> None:
        if self._folder is not None:
            self._finalizer()


def _read_run(path: Path) -> Iterator[SourceItem]:
    with open(path, "rb") as fh:
        while True:
            try:
                block = pickle.load(fh)
            except EOFError:
                return
            for uri, size, label, meta in block:
                yield SourceItem(uri, size, label, meta)


def _remove(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # a forked decode worker must not delete its parent's runs
        shutil.rmtree(folder, ignore_errors=True)
