"""One round of the learning loop on a workspace map: its vectors, the labels so far, the queues.

:mod:`corral.pipeline.learn` works on arrays; this module binds it to a workspace. A round reads
the map's points, the embedding set the map was made from (aligned to the map's order by item id),
and one consistent snapshot of the label store, and returns the model's suggestions with the
store version they were computed for. Whoever accepts a suggestion passes that version back: a
round computed for an older version is refused (a label deleted or merged since would otherwise
be re-created by an acceptance).

``corral learn`` writes the round to ``learn/<map>.json`` in the workspace; the API computes it on
demand and keeps the latest per map (:class:`RoundCache`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.pipeline.learn import Group, LearnConfig, LearnError, LearnResult, learn, likely_pages
from corral.pipeline.queues import Entry, hard_items, label_issues, near_duplicates
from corral.pipeline.regroup import RegroupConfig, Regrouping, regroup
from corral.storage.maps import read_map
from corral.storage.workspace import Workspace, WorkspaceError, atomic_write_json

logger = logging.getLogger(__name__)

#: The most entries a queue holds in a round's JSON.
QUEUE_LIMIT = 200


@dataclass
class MapVectors:
    """A map's item ids in point order and the embeddings they were mapped from, in the same order."""

    map_name: str
    ids: np.ndarray  # [n] object
    vectors: np.ndarray  # [n, d] float32
    embeddings: str  # the embedding set's name
    stamp: tuple[int, int]  # (map.json mtime_ns, size): the map version these vectors are for


def map_vectors(workspace: Workspace | str | Path, map_name: str | None = None) -> MapVectors:
    """Load the vectors behind a map, aligned to its points. Raises WorkspaceError naming what is missing."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    m = read_map(ws, map_name)
    es = ws.default_embedding_set(m.meta.get("embeddings"))
    set_ids, vecs = es.load()
    pos = {i: k for k, i in enumerate(set_ids.tolist())}
    ids = np.asarray(m.points.column("id").to_pylist(), dtype=object)
    missing = [i for i in ids.tolist() if i not in pos]
    if missing:
        raise WorkspaceError(f"map {m.name!r} has {len(missing)} points not in embedding set {es.name!r} (e.g. {missing[0]}); rebuild the map with `corral map --workspace {ws.root}`")
    return MapVectors(m.name, ids, vecs[[pos[i] for i in ids.tolist()]], es.name, map_stamp(m.path))


def map_stamp(map_dir: Path) -> tuple[int, int]:
    """What tells one version of a map from the next: its map.json's modification time and size."""
    st = (map_dir / "map.json").stat()
    return (st.st_mtime_ns, st.st_size)


@dataclass
class Round:
    """The loop's output for one map at one label-store version."""

    map_name: str
    labels_version: int
    ids: np.ndarray
    result: LearnResult
    hard: list[Entry]
    issues: list[Entry]
    duplicates: list[list[int]]
    regrouping: Regrouping | None = None  # the unlabelled rows outside the suggestions, regrouped
    made_at: float = field(default_factory=time.time)
    # per label, a review page of the model's likeliest items (likely_pages), made once per round
    likely: list[Group] = field(default_factory=list)

    def to_json(self, *, limit: int = QUEUE_LIMIT, position: np.ndarray | None = None) -> dict[str, Any]:
        """What the API answers and ``corral learn`` writes: indices with item ids. An index is the
        row in the map's points file, or ``position[row]`` when given (the viewer's point order)."""
        res = self.result
        pos = position if position is not None else np.arange(len(self.ids))

        def entry(e: Entry) -> dict[str, Any]:
            out: dict[str, Any] = {"index": int(pos[e.row]), "id": str(self.ids[e.row]), "score": round(e.score, 4), "label": e.label}
            if e.current is not None:
                out["current"] = e.current
            return out

        def rows_of(g: Group) -> dict[str, Any]:
            return {"label": g.label, "indices": pos[g.rows].tolist(), "ids": [str(self.ids[r]) for r in g.rows], "confidence": [round(float(c), 4) for c in g.confidence]}

        groups = [{**rows_of(g), "expected_precision": round(g.expected_precision, 4)} for g in res.groups]
        # A review page per label: the model's likeliest items for it, past the bar and the gate
        # (the curator checks every tile), the pages with the most expected right tiles first.
        likely = [{**rows_of(g), "expected_right": round(float(g.confidence.sum()), 1)} for g in self.likely[:limit]]
        return {
            "map": self.map_name,
            "labels_version": self.labels_version,
            **res.summary(),
            "groups": groups,
            "likely": likely,
            "hard": [entry(e) for e in self.hard[:limit]],
            "issues": [entry(e) for e in self.issues[:limit]],
            "duplicates": [{"indices": pos[d].tolist(), "ids": [str(self.ids[r]) for r in d]} for d in self.duplicates[:limit]],
            "regrouped": None
            if self.regrouping is None
            else {
                **self.regrouping.summary(),
                "groups": [{"indices": pos[g].tolist(), **beside(self.regrouping, k, res.classes)} for k, g in enumerate(self.regrouping.groups[:limit])],
            },
        }


def store_labels(store: Any, ids: np.ndarray) -> tuple[int, list[str | None], dict[int, set[str]]]:
    """One consistent read of the store: (version, label per row or None, row -> excluded labels)."""
    snap = store.snapshot()
    labels = [snap.items[i][0] if i in snap.items else None for i in ids.tolist()]
    row = {i: k for k, i in enumerate(ids.tolist())}
    excl = {row[i]: set(names) for i, names in snap.exclusions.items() if i in row}
    return snap.version, labels, excl


def run_round(mv: MapVectors, store: Any, *, config: LearnConfig | None = None, knn: Any = None) -> Round:
    """Learn from the store's labels on the map's vectors; raises LearnError when there are too few labels."""
    version, labels, excl = store_labels(store, mv.ids)
    res = learn(vectors=mv.vectors, labels=labels, exclusions=excl, config=config, knn=knn)
    rg = regroup_rest(res)
    hard = hard_items(res, limit=QUEUE_LIMIT)
    issues = label_issues(res, limit=QUEUE_LIMIT)
    dups = near_duplicates(res.knn, limit=QUEUE_LIMIT)
    return Round(mv.map_name, version, mv.ids, res, hard, issues, dups, rg, likely=likely_pages(res))


def regroup_rest(res: LearnResult) -> Regrouping | None:
    """Regroup the unlabelled rows in the metric the labels teach (:mod:`corral.pipeline.regroup`)
    and keep, of the model's suggested groups, only the rows whose regrouped group continues the
    suggested label: the model picks among the labels it knows, the regrouping says whether an
    item is of a known label at all. With fewer labels than the regrouping needs to tell new
    classes from known ones, nothing is suggested yet. Changes ``res.groups`` in place; returns
    the regrouping (None when there is none)."""
    rg = regroup(res.features, res.y) if res.features is not None else None
    if rg is None:
        if len(res.classes) < RegroupConfig().min_labels:
            res.groups = []
            res.undecided = True
        return rg
    res.unclaimed = ~res.labelled & (rg.continues < 0)
    cls = {lb: k for k, lb in enumerate(res.classes)}
    kept = []
    for g in res.groups:
        keep = rg.continues[g.rows] == cls[g.label]
        if keep.sum() >= res.config.min_group:
            kept.append(type(g)(label=g.label, rows=g.rows[keep], confidence=g.confidence[keep]))
    kept.sort(key=lambda g: (-len(g.rows), g.label.lower()))
    res.groups = kept
    return rg


def write_round(workspace: Workspace, rnd: Round) -> Path:
    """``learn/<map>.json`` in the workspace (atomic)."""
    path = workspace.root / "learn" / f"{rnd.map_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rnd.to_json())
    return path


class RoundCache:
    """The latest round per map, recomputed when the map or the label store's version moves.

    One computation per map at a time; a caller asking while one runs waits for it rather than
    starting another. The map's vectors and kNN graph are kept across rounds of one map version.
    :meth:`peek` answers at once with what is known and starts the computation in the background
    (the viewer's name -> next rhythm must not wait for the models on a large map).
    """

    def __init__(self, workspace: Workspace, *, config: LearnConfig | None = None):
        self.workspace = workspace
        self.config = config or LearnConfig()
        self._lock = threading.Lock()
        self._map_locks: dict[str, threading.Lock] = {}
        self._vectors: dict[str, MapVectors] = {}
        self._knn: dict[str, Any] = {}
        self._rounds: dict[str, Round] = {}
        self._running: set[str] = set()  # maps with a background computation under way
        self._errors: dict[str, tuple[int, str]] = {}  # map -> (labels version, why no round) of the last try

    def peek(self, map_name: str, store: Any) -> tuple[Round | None, bool, str | None]:
        """Without waiting: ``(latest round of this map version or None, whether it is for the
        store's current labels, why there is no round for them when the last try failed)``. When
        the round is not current, one is computed in a background thread (at most one per map)."""
        version = int(store.version())
        with self._lock:
            rnd = self._rounds.get(map_name)
            mv = self._vectors.get(map_name)
        if rnd is not None and (mv is None or rnd.ids is not mv.ids or not self._same_map(map_name, mv)):
            rnd = None  # made on another version of the map: its rows mean other items now
        if rnd is not None and rnd.labels_version == version:
            return rnd, True, None
        err = self._errors.get(map_name)
        if err is not None and err[0] == version:
            return rnd, False, err[1]
        self.start(map_name, store)
        return rnd, False, None

    def _same_map(self, map_name: str, mv: MapVectors) -> bool:
        try:
            return mv.stamp == map_stamp(self.workspace.map_dir(map_name))
        except OSError:
            return False

    def start(self, map_name: str, store: Any) -> bool:
        """Compute the round for the current labels in a background thread (no-op while one runs).
        Returns whether a computation was started."""
        with self._lock:
            if map_name in self._running:
                return False
            self._running.add(map_name)

        def work() -> None:
            try:
                self.get(map_name, store)
            except LearnError:
                pass  # kept for peek() to say
            except Exception:  # a background round must not die silently
                logger.exception("learning loop: the round for map %r failed", map_name)
            finally:
                with self._lock:
                    self._running.discard(map_name)

        threading.Thread(target=work, name=f"corral-round-{map_name}", daemon=True).start()
        return True

    def _vectors_for(self, map_name: str) -> MapVectors:
        mv = self._vectors.get(map_name)
        if mv is None or mv.stamp != map_stamp(self.workspace.map_dir(map_name)):
            mv = map_vectors(self.workspace, map_name)
            self._vectors[map_name] = mv
            self._knn.pop(map_name, None)
        return mv

    def get(self, map_name: str, store: Any) -> Round:
        with self._lock:
            lock = self._map_locks.setdefault(map_name, threading.Lock())
        with lock:
            mv = self._vectors_for(map_name)
            rnd = self._rounds.get(map_name)
            if rnd is not None and rnd.labels_version == store.version() and rnd.ids is mv.ids:
                return rnd
            version = int(store.version())
            try:
                rnd = run_round(mv, store, config=self.config, knn=self._knn.get(map_name))
            except LearnError as e:  # too few labels: said to every caller until the labels move
                self._errors[map_name] = (version, str(e))
                raise
            self._errors.pop(map_name, None)
            self._knn[map_name] = rnd.result.knn
            with self._lock:
                self._rounds[map_name] = rnd
            return rnd

    def latest(self, map_name: str) -> Round | None:
        return self._rounds.get(map_name)


def beside(rg: Regrouping, k: int, classes: list[str]) -> dict[str, str]:
    """``{"beside": label}`` for a regrouped group that is a branch beside a label's items, else ``{}``."""
    b = rg.beside[k]
    return {"beside": classes[b]} if b >= 0 else {}


def next_groups(
    cluster: np.ndarray,
    labelled: np.ndarray,
    suggested: list[np.ndarray] | None = None,
    labels: list[str] | None = None,
    *,
    regrouped: list[np.ndarray] | None = None,
    regrouped_beside: list[dict[str, str]] | None = None,
    cohesion: np.ndarray | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """What to name next, best first: the round's suggested groups (largest first), the unlabelled
    rows the labels regrouped (``regrouped``, :func:`regroup_rest`; largest first), then the map's
    clusters by how many unlabelled points they still hold (counted up to the median cluster size)
    times their cohesion (``cohesion[c]``, the clusters table's mean cosine to the cluster's
    direction: a clean cluster names in one go, a mixed one needs work), with their unlabelled points. Rows index the same arrays as
    ``cluster`` and ``labelled``; the viewer offers ``[0]`` after every naming."""
    out: list[dict[str, Any]] = []
    for rows, lb in zip(suggested or [], labels or []):
        if len(rows):
            out.append({"kind": "suggested", "label": lb, "rows": np.asarray(rows)})
    for k, rows in enumerate(regrouped or []):
        rows = np.asarray(rows)
        rows = rows[~np.asarray(labelled, bool)[rows]]
        if len(rows):
            out.append({"kind": "group", "rows": rows, **(regrouped_beside[k] if regrouped_beside and k < len(regrouped_beside) else {})})
    free = ~np.asarray(labelled, bool) & (cluster >= 0)
    counts = np.bincount(cluster[free], minlength=int(cluster.max()) + 1 if len(cluster) else 0)
    weight = np.ones(len(counts)) if cohesion is None else np.clip(np.resize(np.asarray(cohesion, np.float64), len(counts)), 0.0, 1.0)
    # A cluster far larger than the typical one is more likely several classes than one (on the
    # labelled sets purity falls with size): its size counts only up to the median's.
    sizes = np.bincount(cluster[cluster >= 0]) if (cluster >= 0).any() else np.zeros(0, np.int64)
    typical = float(np.median(sizes[sizes > 0])) if (sizes > 0).any() else 1.0
    value = np.minimum(counts, typical) * weight
    for c in np.lexsort((np.arange(len(counts)), -value)):
        if counts[c] == 0 or len(out) >= limit:
            continue
        out.append({"kind": "cluster", "cluster": int(c), "rows": np.flatnonzero(free & (cluster == c))})
    return out[:limit]


#: A proposal counts as one the curator passed over when at least this share of its items was in
#: a proposal passed over before (the groups are made anew each round, so rarely the very same).
PASSED_SHARE = 0.8


def passed_last(entries: list[dict[str, Any]], passed: list[np.ndarray], *, share: float = PASSED_SHARE) -> list[dict[str, Any]]:
    """``entries`` (:func:`next_groups`) with the proposals the curator passed over put last.

    A curator who presses ] past a proposal, or names something else while it is on offer, has
    seen it and not taken it; offering it first again after the next naming costs a ] every time.
    An entry counts as passed over when ``share`` of its rows lie in one of the ``passed`` row
    sets; suggested groups are the model's and stay where they are. The order is otherwise kept.
    (The viewer's server reads back every curator's passes on the map, hundreds of them, so the
    overlaps are counted at once: one sparse product of entries by passes.)"""
    sets = [np.unique(np.asarray(p, dtype=np.int64)) for p in passed if len(p)]
    if not sets or not entries:
        return entries
    import scipy.sparse as sp

    rows = [np.unique(np.asarray(e["rows"], dtype=np.int64)) if e["kind"] != "suggested" else np.empty(0, np.int64) for e in entries]
    # only the points some entry holds matter: number them 0..m-1 and drop the rest of each pass
    points = np.unique(np.concatenate(rows))
    m = len(points)

    def incidence(parts: list[np.ndarray]) -> Any:
        flat = np.concatenate(parts)
        owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        at = np.searchsorted(points, flat)
        hit = (at < m) & (points[np.minimum(at, max(m - 1, 0))] == flat) if m else np.zeros(len(flat), bool)
        return sp.csr_matrix((np.ones(int(hit.sum()), np.int32), (owner[hit], at[hit])), shape=(len(parts), m))

    overlap = (incidence(rows) @ incidence(sets).T).toarray()
    size = np.asarray([len(r) for r in rows])
    flags = (size > 0) & (overlap.max(axis=1, initial=0) >= share * size)
    return [e for e, f in zip(entries, flags) if not f] + [e for e, f in zip(entries, flags) if f]


def cohesion_by_cluster(clusters: Any) -> np.ndarray:
    """A map's clusters table -> cohesion indexed by cluster id (1.0 where the table has none)."""
    ids = np.asarray(clusters.column("cluster").to_pylist(), dtype=np.int64)
    out = np.ones(int(ids.max()) + 1 if len(ids) else 0)
    if "cohesion" in clusters.column_names:
        vals = clusters.column("cohesion").to_pylist()
        for c, v in zip(ids.tolist(), vals):
            if c >= 0 and v is not None:
                out[c] = float(v)
    return out
