"""Workspaces of clustered synthetic vectors for the recognition tests (no model needed).

Each class is a direction in space with its items scattered around it, so that nearest
neighbours mostly share a class and unseen classes land far from every known one, as real
embeddings of distinct objects do. Ids look like the embed stage's content hashes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from corral.storage.maps import clusters_table, points_table, write_map
from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table

MODEL = "timm:toy-model"
WEIGHTS = "sha256:" + "1" * 64


def item_id(cls: int, i: int, salt: str = "") -> str:
    return hashlib.blake2b(f"{salt}{cls}:{i}".encode(), digest_size=16).hexdigest()


def clustered(classes: int, per_class: int, *, dim: int = 32, spread: float = 0.35, seed: int = 0, salt: str = "") -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, unit vectors, class names) with ``per_class`` items around each of ``classes`` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids, vecs, names = [], [], []
    for c in range(classes):
        v = centres[c] + spread * rng.standard_normal((per_class, dim)).astype(np.float32) / np.sqrt(dim) * 4
        vecs.append(v)
        ids += [item_id(c, i, salt) for i in range(per_class)]
        names += [f"class-{c:02d}"] * per_class
    x = np.concatenate(vecs)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return ids, x.astype(np.float32), names


def write_set(root: Path, ids: list[str], vectors: np.ndarray, *, name: str = "toy", shard: int = 0, model: str = MODEL, weights_hash: str = WEIGHTS) -> Workspace:
    """Add one shard of vectors (and their items) to the workspace's embedding set ``name``."""
    ws = Workspace(root).ensure()
    es = ws.embedding_set(name)
    es.path.mkdir(parents=True, exist_ok=True)
    emb, items = es.shard_paths(shard)
    atomic_write_table(emb, embedding_table(ids, vectors))
    atomic_write_table(items, items_table([{"id": i, "uri": f"/data/{i}.png", "status": "ok", "width": 8, "height": 8, "bytes": 100} for i in ids]))
    atomic_write_json(es.sidecar_path, {"model": model, "weights_hash": weights_hash, "dim": int(vectors.shape[1]), "dtype": "float32", "count": len(ids), "preprocessing": {}})
    return ws


def one_cluster_map(ws: Workspace, ids: list[str], is_new: np.ndarray, *, name: str = "toy") -> None:
    """A map ``name`` of every item in one cluster at the origin, ``is_new`` marking a new collection."""
    n = len(ids)
    write_map(
        ws.map_dir(name),
        points=points_table(ids=ids, xy=np.zeros((n, 2)), cluster=np.zeros(n), probability=np.ones(n), outlier_score=np.zeros(n), is_new=is_new),
        clusters=clusters_table(cluster=np.array([0]), size=np.array([n]), exemplars=[ids[:3]], cohesion=np.array([1.0])),
        meta={"name": name, "embedding_set": "toy"},
    )
