"""Small seeded embedding sets written straight into a workspace, for the map tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corral.storage.workspace import EmbeddingSet, Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table


def blobs(n_per: int = 60, k: int = 4, dim: int = 24, spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well-separated clusters of unit vectors: ``(vectors [k*n_per, dim], labels)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    x = np.concatenate([c + spread * np.linalg.norm(c) / np.sqrt(dim) * rng.normal(size=(n_per, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def write_set(root: Path, vectors: np.ndarray | list[np.ndarray], *, name: str = "test-set", model: str = "test:blobs", ids: list[str] | None = None) -> EmbeddingSet:
    """An embedding set with one shard per array in ``vectors`` (so dimensions can differ)."""
    ws = Workspace(root).ensure()
    es = ws.embedding_set(name)
    es.path.mkdir(parents=True, exist_ok=True)
    shards = vectors if isinstance(vectors, list) else [vectors]
    count, start = 0, 0
    for i, v in enumerate(shards):
        shard_ids = ids[start : start + len(v)] if ids else [f"item{start + j:05d}" for j in range(len(v))]
        start += len(v)
        emb, items = es.shard_paths(i)
        atomic_write_table(emb, embedding_table(shard_ids, np.asarray(v, np.float32)))
        atomic_write_table(items, items_table([{"id": s, "uri": f"/data/{s}.png", "status": "ok"} for s in shard_ids]))
        count += len(v)
    dim = int(np.asarray(shards[0]).shape[1]) if len(shards[0]) else 0
    atomic_write_json(es.sidecar_path, {"model": model, "weights_hash": "none", "dim": dim, "dtype": "float32", "count": count})
    return es
