"""Pre-labelling: a new collection's items get proposed labels; curators accept or reject.

``corral map --update`` places a new collection on an existing map (``is_new`` points);
``corral suggest`` then proposes a label for those items and keeps the sure ones, leaving the rest
for curators. Two proposers write the same table: the model the curation loop learns from the
labels (:mod:`corral.pipeline.presuggest`, the default: more precise than the index on every set
measured, see docs/learn.md) and the recognition index (:func:`suggest`, here), which keeps the answers
whose margin reaches its pre-labelling threshold. Nothing is labelled here: the viewer shows the
suggestions grouped by label, and accepting is an ordinary ``assign`` action, rejecting an ordinary
``exclude`` (which also teaches the next round that the item is not that label).

Layout under ``workspace/suggestions/``::

    <map>.parquet    id (string), label (string), score (float32), margin (float32: how far the
                     score clears the run's threshold), top (string: JSON [[name, score], ...]);
                     the index's score is a vote similarity and its margin the score minus the
                     label's typical score, the model's score a calibrated confidence
    <map>.json       map, index generation and labels version, threshold, counts, created_at;
                     written after the table
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corral.storage.index import LabelIndex
from corral.storage.maps import read_map
from corral.storage.recognizer import Recognizer
from corral.storage.workspace import Workspace, WorkspaceError, atomic_write_json, atomic_write_table, safe_name

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([("id", pa.string()), ("label", pa.string()), ("score", pa.float32()), ("margin", pa.float32()), ("top", pa.string())])


@dataclass
class Suggestions:
    """Suggestions of one map: a table (see :data:`SCHEMA`) and its metadata."""

    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> Iterator[tuple[str, list[str], list[float]]]:
        """(label, ids, margins) per label, the largest group first, most confident first within."""
        by: dict[str, list[tuple[float, str]]] = {}
        for i, lb, s in zip(self.table.column("id").to_pylist(), self.table.column("label").to_pylist(), self.table.column("margin").to_pylist()):
            by.setdefault(lb, []).append((s, i))
        for lb, rows in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0].lower())):
            rows.sort(key=lambda r: -r[0])
            yield lb, [i for _, i in rows], [s for s, _ in rows]


@dataclass
class SuggestResult:
    map: str
    candidates: int  # items considered (new on the map, unlabelled)
    suggested: int  # items with a suggestion
    left: int  # items left for curators
    by_label: dict[str, int]
    threshold: float
    path: str
    seconds: float
    using: str = "index"  # what proposed them: the recognition index or the learnt model
    # learnt model: items sure enough but found among no item of their label by the known/new gate
    held_back_as_new: int | None = None

    def summary(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["seconds"] = round(self.seconds, 3)
        return out


def _paths(ws: Workspace, map_name: str) -> tuple[Path, Path]:
    base = ws.root / "suggestions" / safe_name(map_name)
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def suggest(*, workspace: str | os.PathLike[str] | Workspace, map_name: str | None = None, min_margin: float | None = None, include_all: bool = False, batch_size: int = 4096) -> SuggestResult:
    """Propose labels for the map's new (or, with ``include_all``, every) unlabelled items, from the
    recognition index (``corral suggest --using index``; the learnt model's counterpart is
    :func:`corral.pipeline.presuggest.suggest_learnt`).

    Args:
        workspace: the workspace with a map and a recognition index.
        map_name: the map (default: the newest).
        min_margin: the margin (score minus the label's typical score) a suggestion needs
            (default: the index's calibrated pre-labelling threshold, or its unknown threshold
            plus 0.05 when calibration found none).
        include_all: consider every unlabelled point, not only those ``corral map --update`` placed.
        batch_size: queries per index search.
    """
    from corral.storage.index_build import read_vectors

    if min_margin is not None and not -2 <= min_margin <= 2:
        raise ValueError(f"min_margin={min_margin!r}: expected a margin from -2 to 2")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    t0 = time.perf_counter()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    m = read_map(ws, map_name)
    rec = Recognizer(LabelIndex.load(ws.index_dir), using="index")  # the index's own margins (the learnt model has suggest_learnt)
    pending = candidates(ws, m.name, include_all=include_all)
    es = ws.default_embedding_set(rec.index.meta.embedding_set or None)
    got_ids, vecs = read_vectors(es, set(pending.ids))
    t = float(min_margin) if min_margin is not None else rec.suggest_threshold
    rows: dict[str, list[Any]] = {"id": [], "label": [], "score": [], "margin": [], "top": []}
    for s in range(0, len(got_ids), batch_size):
        for item, d in zip(got_ids[s : s + batch_size], rec.recognize(vecs[s : s + batch_size])):
            if d.label is not None and d.margin >= t and d.label not in pending.excluded.get(item, ()):
                rows["id"].append(item)
                rows["label"].append(d.label)
                rows["score"].append(d.score)
                rows["margin"].append(d.margin)
                rows["top"].append(json.dumps([[n, round(v, 4)] for n, v in d.top]))
    extra = {"using": "index", "index_generation": rec.index.meta.generation, "index_labels_version": rec.index.meta.labels_version, "without_vectors": len(pending.ids) - len(got_ids)}
    return write_suggestions(ws, m.name, rows, threshold=t, pending=pending, extra=extra, t0=t0)


@dataclass
class Pending:
    """The items a suggestion run considers, read from the label store at one version."""

    ids: list[str]  # new (or every) unlabelled points of the map, sorted
    excluded: dict[str, set[str]]  # item -> labels curators said it is not
    version: int  # label store version read


def candidates(ws: Workspace, map_name: str, *, include_all: bool = False) -> Pending:
    """The map's new (``is_new``; with ``include_all`` every) points that have no label yet."""
    from corral.storage.labels import LabelStore

    m = read_map(ws, map_name)
    ids = m.points.column("id").to_pylist()
    if not include_all:
        is_new = m.points.column("is_new").to_pylist() if "is_new" in m.points.column_names else [False] * len(ids)
        ids = [i for i, new in zip(ids, is_new) if new]
    store = LabelStore.open(ws)
    try:
        labelled = store.item_labels()
        excluded = store.exclusions()
        version = store.version()
    finally:
        store.close()
    return Pending(sorted({i for i in ids if i not in labelled}), {k: set(v) for k, v in excluded.items()}, version)


def write_suggestions(ws: Workspace, map_name: str, rows: dict[str, list[Any]], *, threshold: float, pending: Pending, extra: dict[str, Any], t0: float) -> SuggestResult:
    """Write a map's suggestions (columns of :data:`SCHEMA`) and their metadata, the table first."""
    table = pa.table({**rows, "score": np.asarray(rows["score"], dtype=np.float32), "margin": np.asarray(rows["margin"], dtype=np.float32)}, schema=SCHEMA)
    tpath, mpath = _paths(ws, map_name)
    atomic_write_table(tpath, table)
    by_label: dict[str, int] = {}
    for lb in rows["label"]:
        by_label[lb] = by_label.get(lb, 0) + 1
    meta = {
        "map": map_name,
        "threshold": round(threshold, 6),
        **extra,
        "labels_version": pending.version,
        "candidates": len(pending.ids),
        "suggested": table.num_rows,
        "by_label": dict(sorted(by_label.items())),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(mpath, meta)
    logger.info("%d of %d new items on map %s have a suggestion (%s, threshold %.3f)", table.num_rows, len(pending.ids), map_name, extra.get("using", "index"), threshold)
    using = str(extra.get("using", "index"))
    held = extra.get("held_back_as_new")
    return SuggestResult(
        map_name, len(pending.ids), table.num_rows, len(pending.ids) - table.num_rows, meta["by_label"], threshold, str(tpath), time.perf_counter() - t0, using, None if held is None else int(held)
    )


def read_suggestions(workspace: str | os.PathLike[str] | Workspace, map_name: str) -> Suggestions:
    """The suggestions file of a map as written (empty when there is none)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    tpath, mpath = _paths(ws, map_name)
    if not mpath.is_file() or not tpath.is_file():
        return Suggestions(SCHEMA.empty_table(), {})
    try:
        return Suggestions(pq.read_table(tpath).cast(SCHEMA), json.loads(mpath.read_text()))
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise WorkspaceError(f"suggestions of map {map_name!r} are unreadable ({e}); run `corral suggest` again") from None


def pending_suggestions(workspace: str | os.PathLike[str] | Workspace, map_name: str, *, store: Any = None) -> Suggestions:
    """Suggestions still open: not yet labelled, and not excluded from the suggested label."""
    sug = read_suggestions(workspace, map_name)
    if sug.table.num_rows == 0:
        return sug
    own = store is None
    if own:
        from corral.storage.labels import LabelStore

        store = LabelStore.open(workspace)
    try:
        labelled = store.item_labels()
        excluded = store.exclusions()
    finally:
        if own:
            store.close()
    ids = sug.table.column("id").to_pylist()
    labels = sug.table.column("label").to_pylist()
    keep = [j for j, (i, lb) in enumerate(zip(ids, labels)) if i not in labelled and lb not in excluded.get(i, ())]
    return Suggestions(sug.table.take(pa.array(keep, type=pa.int64())), sug.meta)
