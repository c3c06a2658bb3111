"""Judging embedders before labelling with them (``corral evaluate``).

Every embedding set of a workspace is scored on the labels known so far (the label store) or on
an imported labelled sample (a CSV/JSONL/Parquet file of ``id`` or ``uri``/``path`` and
``label``, read as :mod:`corral.storage.label_import` reads label files). Per set, over its
labelled items:

- **kNN label agreement**: each labelled item's ``k`` (10) nearest labelled items by cosine
  similarity, itself left out; ``knn_agreement`` is the mean share of those neighbours that carry
  the item's label, ``knn_accuracy`` the share of items whose neighbours' majority vote (nearest
  first on ties) is their label.
- **Cluster purity and ARI** of the set's HDBSCAN clustering: the newest unsupervised map of the
  set, or, when it has none (or ``fresh``), a map made by :func:`corral.pipeline.mapping.build_map`
  with default settings in a temporary folder. Noise items count as clusters of one.
- **Estimated curator actions**: per cluster holding labelled items, one action to select it, one
  per member whose label is not the cluster's majority (marking it for exclusion) and one to name
  it; summed over clusters and divided by the labelled items::

      actions = sum over clusters c of (2 + wrong_c),   actions_per_item = actions / labelled

  It is a cheap stand-in for the simulated curator of ``bench/curate.py``: it ignores lassos,
  splits and merging clusters of one class (so it overcounts a class split over many clusters)
  and what naming the excluded members costs later (so it undercounts mixed clusters). It is the
  same rule for every set, which is what a comparison needs.

Sets are ranked by estimated actions per item (fewest first), then by kNN agreement.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.storage.labels import LabelStore
from corral.storage.maps import MapData, list_maps, read_map
from corral.storage.workspace import EmbeddingSet, Workspace, WorkspaceError

logger = logging.getLogger(__name__)

#: Neighbours per item for the kNN agreement.
DEFAULT_K = 10
#: The kNN agreement is measured on at most this many labelled items (a seeded sample beyond).
MAX_QUERIES = 20_000


@dataclass
class SetScore:
    """How well one embedding set separates the labels."""

    embeddings: str  # embedding set name
    model: str | None  # embedder name from the sidecar
    dim: int
    items: int  # vectors in the set
    labelled: int  # of them, items with a label
    classes: int  # distinct labels among them
    knn_agreement: float | None = None  # mean share of the k nearest labelled items with the same label
    knn_accuracy: float | None = None  # share of items whose k nearest vote for their own label
    clusters: int = 0  # clusters holding labelled items (noise items count one each)
    purity: float | None = None  # labelled items in their cluster's majority class / labelled
    ari: float | None = None  # adjusted Rand index of clusters against labels
    wrong_members: int = 0  # labelled items outside their cluster's majority class
    actions: int = 0  # estimated curator actions (see the module docstring)
    actions_per_item: float | None = None
    items_per_action: float | None = None
    clustering: str = ""  # map:<name> (an existing map) or fresh (made for this evaluation)
    k: int = DEFAULT_K
    seconds: float = 0.0
    skipped: str | None = None  # why the set could not be scored

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("knn_agreement", "knn_accuracy", "purity", "ari", "actions_per_item", "items_per_action"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 4)
        out["seconds"] = round(self.seconds, 2)
        return out


@dataclass
class Evaluation:
    """Every set's score, best first."""

    labels: str  # where the labels came from: "label store" or the sample file
    labelled: int  # labelled items known (any set)
    classes: int
    sets: list[SetScore] = field(default_factory=list)

    @property
    def best(self) -> str | None:
        scored = [s for s in self.sets if s.skipped is None]
        return scored[0].embeddings if scored else None

    def summary(self) -> dict[str, Any]:
        return {"labels": self.labels, "labelled": self.labelled, "classes": self.classes, "best": self.best, "sets": [s.row() for s in self.sets]}


# --------------------------------------------------------------------------------------------
# Scores


def knn_agreement(vectors: np.ndarray, labels: np.ndarray, *, k: int = DEFAULT_K, metric: str = "cosine", max_queries: int = MAX_QUERIES, seed: int = 0) -> tuple[float, float]:
    """Leave-one-out kNN label agreement: ``(mean neighbour agreement, majority-vote accuracy)``.

    ``vectors`` ``[n, d]`` and ``labels`` ``[n]`` (any hashable values) are the labelled items;
    ``metric`` is ``cosine`` or ``euclidean``. Each item's neighbours are the other items, so an
    item never counts as its own neighbour even when a duplicate sits at distance 0.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric={metric!r}: expected cosine or euclidean")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: must be a positive integer")
    x = np.asarray(vectors, np.float32)
    _, y = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"kNN agreement needs at least 2 labelled items, got {n}")
    k = min(int(k), n - 1)
    queries = np.arange(n)
    if n > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))
    neigh = _neighbours(x, queries, k=k, metric=metric)
    same = y[neigh] == y[queries][:, None]
    agreement = float(same.mean())
    # Majority vote, nearest first on ties: weights 1 + a small bonus for rank.
    weights = 1.0 + 1e-3 * (k - np.arange(k)) / k
    n_cls = int(y.max()) + 1
    votes = np.zeros((queries.size, n_cls))
    np.add.at(votes, (np.repeat(np.arange(queries.size), k), y[neigh].reshape(-1)), np.tile(weights, queries.size))
    accuracy = float(np.mean(votes.argmax(1) == y[queries]))
    return agreement, accuracy


def _neighbours(x: np.ndarray, queries: np.ndarray, *, k: int, metric: str, chunk: int = 2048) -> np.ndarray:
    """Rows of the ``k`` nearest other items of each query, nearest first."""
    if metric == "euclidean":
        from scipy.spatial import cKDTree

        _, idx = cKDTree(x).query(x[queries], k=k + 1)
        idx = np.asarray(idx).reshape(queries.size, k + 1)
        out = np.empty((queries.size, k), np.int64)
        for r, (q, row) in enumerate(zip(queries, idx)):
            row = row[row != q]
            out[r] = row[:k]
        return out
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    out = np.empty((queries.size, k), np.int64)
    for s in range(0, queries.size, chunk):
        q = queries[s : s + chunk]
        sim = unit[q] @ unit.T
        sim[np.arange(q.size), q] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1, kind="stable")
        out[s : s + q.size] = np.take_along_axis(part, order, 1)
    return out


def cluster_scores(clusters: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Purity, ARI and the estimated curator actions of a clustering of labelled items.

    ``clusters`` ``[n]`` are cluster numbers (``-1`` noise: each such item a cluster of one),
    ``labels`` ``[n]`` the items' labels. See the module docstring for the action estimate.
    """
    from sklearn.metrics import adjusted_rand_score

    c = np.asarray(clusters, np.int64).copy()
    y = np.asarray(labels, dtype=object).astype(str)
    n = c.size
    if n == 0:
        raise ValueError("cluster scores need at least one labelled item")
    noise = c < 0
    if noise.any():
        c[noise] = c.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    groups: dict[int, Counter] = {}
    for ci, yi in zip(c.tolist(), y.tolist()):
        groups.setdefault(ci, Counter())[yi] += 1
    majority = sum(cnt.most_common(1)[0][1] for cnt in groups.values())
    wrong = n - majority
    actions = 2 * len(groups) + wrong
    return {
        "clusters": len(groups),
        "purity": majority / n,
        "ari": float(adjusted_rand_score(y, c)),
        "wrong_members": int(wrong),
        "actions": int(actions),
        "actions_per_item": actions / n,
        "items_per_action": n / actions,
    }


# --------------------------------------------------------------------------------------------
# Labels


def workspace_labels(ws: Workspace, *, labels_file: str | os.PathLike[str] | None = None) -> tuple[dict[str, str], str]:
    """Item id -> label from the label store, or from ``labels_file``: ``(labels, source)``.

    The file is read like ``corral labels import`` reads one, but nothing is written to the store.
    """
    if labels_file is not None:
        from corral.storage.label_import import plan_import

        items = ws.items()
        known = {i for i, s in zip(items.column("id").to_pylist(), items.column("status").to_pylist()) if s == "ok"}
        labels, report = plan_import(labels_file, workspace=ws, known=known)
        if report.unknown:
            logger.warning("%s: %d of %d rows name items the workspace does not know (e.g. %s)", labels_file, report.unknown, report.rows, ", ".join(report.unknown_examples[:3]))
        return labels, str(labels_file)
    from corral.storage.label_location import resolve

    where = resolve(ws)  # $CORRAL_LABELS may put the store in PostgreSQL
    if where.kind == "sqlite" and not where.path.is_file():
        return {}, "label store"
    with LabelStore.open(ws) as store:
        return store.item_labels(), "label store"


def _parents(es: EmbeddingSet) -> dict[str, str]:
    """Crop id -> parent image id, for sets made with a detector (labels may sit on the image)."""
    items = es.items()
    if "parent_id" not in items.column_names:
        return {}
    return {i: p for i, p in zip(items.column("id").to_pylist(), items.column("parent_id").to_pylist()) if p}


def labels_for(ids: np.ndarray, labels: dict[str, str], parents: dict[str, str]) -> np.ndarray:
    """Each id's label (its own, else its parent image's), ``""`` where none."""
    return np.array([labels.get(i) or labels.get(parents.get(i, ""), "") for i in ids.tolist()], dtype=object)


# --------------------------------------------------------------------------------------------
# Evaluating


def evaluate_workspace(
    *,
    workspace: str | Path | Workspace,
    labels_file: str | os.PathLike[str] | None = None,
    k: int = DEFAULT_K,
    fresh: bool = False,
    seed: int | None = 0,
) -> Evaluation:
    """Score every embedding set of ``workspace`` on its labels; see the module docstring.

    Args:
        workspace: the workspace folder.
        labels_file: a labelled sample (CSV/JSONL/Parquet: ``id`` or ``uri``/``path``, ``label``)
            instead of the label store.
        k: neighbours for the kNN agreement.
        fresh: cluster every set anew with default map settings, ignoring existing maps (all sets
            then share one rule).
        seed: seed of the maps made for the evaluation.

    Raises :class:`WorkspaceError` when the workspace has no embeddings and ``ValueError`` when
    fewer than two items or classes are labelled.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.root.is_dir():
        raise WorkspaceError(f"workspace {ws.root} does not exist")
    sets = ws.embedding_sets()
    if not sets:
        raise WorkspaceError(f"no embeddings in {ws.root}; run `corral embed SOURCE --workspace {ws.root}` first")
    labels, source = workspace_labels(ws, labels_file=labels_file)
    classes = len(set(labels.values()))
    if len(labels) < 2 or classes < 2:
        raise ValueError(
            f"evaluating embedders needs labelled items of at least 2 labels; {source} has {len(labels)} item(s) of {classes} label(s): "
            "name a few clusters in the viewer, or pass --labels FILE (id or uri, label)"
        )
    out = Evaluation(labels=source, labelled=len(labels), classes=classes)
    for es in sets:
        out.sets.append(evaluate_set(workspace=ws, embeddings=es.name, labels=labels, k=k, fresh=fresh, seed=seed))
    out.sets.sort(key=lambda s: (s.skipped is not None, s.actions_per_item if s.actions_per_item is not None else np.inf, -(s.knn_agreement or 0.0)))
    return out


def evaluate_set(
    *,
    workspace: Workspace,
    embeddings: str,
    labels: dict[str, str],
    k: int = DEFAULT_K,
    fresh: bool = False,
    seed: int | None = 0,
    map_data: MapData | None = None,
) -> SetScore:
    """Score one embedding set; ``map_data`` is the map whose clusters to judge (default: the
    newest unsupervised map of the set, else one made for the evaluation)."""
    from corral.pipeline.mapping import load_vectors

    t0 = time.perf_counter()
    es = workspace.embedding_set(embeddings)
    side = es.sidecar()
    ids, vecs, _ = load_vectors(es)
    y = labels_for(ids, labels, _parents(es))
    has = y != ""
    score = SetScore(embeddings=es.name, model=side.get("model"), dim=int(vecs.shape[1]), items=int(ids.size), labelled=int(has.sum()), classes=len(set(y[has].tolist())), k=int(k))
    if score.labelled < 2 or score.classes < 2:
        score.skipped = f"{score.labelled} labelled item(s) of {score.classes} label(s) in this set; at least 2 of 2 are needed"
        return score
    score.knn_agreement, score.knn_accuracy = knn_agreement(vecs[has], y[has], k=k)
    if map_data is None and not fresh:
        map_data = newest_map_of(workspace, es.name)
    if map_data is not None:
        clusters, score.clustering = _map_clusters(map_data, ids), f"map:{map_data.name}"
    else:
        clusters, score.clustering = _fresh_clusters(es, seed=seed), "fresh"
    on_map = has & (clusters != np.iinfo(np.int64).min)
    cs = cluster_scores(clusters[on_map], y[on_map])
    for key, value in cs.items():
        setattr(score, key, value)
    score.seconds = time.perf_counter() - t0
    logger.info("evaluated %s: kNN agreement %.3f, ARI %.3f, %.2f actions per item", es.name, score.knn_agreement, score.ari, score.actions_per_item)
    return score


def newest_map_of(ws: Workspace, embeddings: str) -> MapData | None:
    """The newest map made from ``embeddings`` without labels steering its layout, if any."""
    best: tuple[int, str] | None = None
    for name in list_maps(ws):
        meta_path = ws.map_dir(name) / "map.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("embeddings") == embeddings and not meta.get("labels"):
            stamp = meta_path.stat().st_mtime_ns
            if best is None or stamp > best[0]:
                best = (stamp, name)
    return read_map(ws, best[1]) if best else None


def _map_clusters(m: MapData, ids: np.ndarray) -> np.ndarray:
    """The map's cluster of each id (int64 minimum where the id is not on the map)."""
    row = {i: r for r, i in enumerate(m.points.column("id").to_pylist())}
    cl = m.points.column("cluster").to_numpy()
    missing = np.iinfo(np.int64).min
    return np.array([int(cl[row[i]]) if i in row else missing for i in ids.tolist()], np.int64)


def _fresh_clusters(es: EmbeddingSet, *, seed: int | None) -> np.ndarray:
    """Clusters of a map made with default settings in a temporary workspace (the user's
    workspace is left as it was); row-aligned with ``es``'s usable vectors."""
    from corral.pipeline.mapping import MapConfig, build_map, load_vectors

    with tempfile.TemporaryDirectory(prefix="corral-evaluate-") as tmp:
        tws = Workspace(tmp)
        tws.embeddings_dir.mkdir(parents=True)
        (tws.embeddings_dir / es.name).symlink_to(es.path.resolve(), target_is_directory=True)
        res = build_map(workspace=tws, embeddings=es.name, config=MapConfig(name=es.name, seed=seed, device="cpu"))
        ids, _, _ = load_vectors(es)
        return _map_clusters(read_map(tws, res.name), ids)


def evaluate_map(*, workspace: str | Path | Workspace, map_name: str, labels: dict[str, str] | None = None, k: int = DEFAULT_K) -> SetScore:
    """Score the embedding set behind one map, judging that map's own clusters (the viewer's figure)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    m = read_map(ws, map_name)
    es_name = m.meta.get("embeddings")
    if not es_name or not ws.embedding_set(es_name).sidecar_path.is_file():
        raise WorkspaceError(f"map {map_name!r}: its embedding set {es_name!r} is not in {ws.root} any more")
    if labels is None:
        labels, _ = workspace_labels(ws)
    return evaluate_set(workspace=ws, embeddings=es_name, labels=labels, k=k, map_data=m)


__all__ = ["Evaluation", "SetScore", "cluster_scores", "evaluate_map", "evaluate_set", "evaluate_workspace", "knn_agreement", "workspace_labels"]
