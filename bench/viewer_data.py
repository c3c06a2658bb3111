"""Synthetic maps shaped like UMAP output, for the viewer benchmark and the viewer's tests.

UMAP maps of real collections are hundreds of blobs of very different sizes (a long tail of
small clusters), some stretched or bent, with a thin haze of noise between them. The generator
makes that with a fixed seed and writes a map folder following the map contract.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from corral.storage.maps import clusters_table, points_table, write_map
from corral.storage.workspace import Workspace


def synthetic_points(n: int, *, blobs: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``blobs`` clusters of Pareto-distributed sizes: (xy float32 [n, 2], cluster int32)."""
    rng = np.random.default_rng(seed)
    noise_n = int(n * 0.04)
    sizes = rng.pareto(1.1, blobs) + 1.0
    sizes = np.maximum(1, (sizes / sizes.sum() * (n - noise_n)).astype(np.int64))
    sizes[np.argmax(sizes)] += (n - noise_n) - sizes.sum()
    span = 12.0 * np.sqrt(blobs / 300)
    centres = rng.uniform(-span, span, (blobs, 2))
    xy = np.empty((n, 2), dtype=np.float32)
    cluster = np.full(n, -1, dtype=np.int32)
    at = 0
    for b, s in enumerate(sizes):
        s = int(s)
        radius = 0.12 * np.sqrt(s / 500) ** 0.8 + 0.05
        pts = rng.normal(0, 1, (s, 2)) * radius * rng.uniform(0.5, 1.5, 2)
        if rng.random() < 0.3:  # a bent arm, as UMAP draws manifolds
            t = rng.uniform(-1, 1, s) * radius * 4
            pts[:, 0] += t
            pts[:, 1] += 0.25 * t**2 / max(radius * 4, 1e-3)
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        xy[at : at + s] = pts @ rot + centres[b]
        cluster[at : at + s] = b
        at += s
    xy[at:] = rng.uniform(-span, span, (n - at, 2))
    perm = rng.permutation(n)
    return xy[perm], cluster[perm]


def write_synthetic_map(workspace: str | Path, *, n: int, name: str = "synthetic", blobs: int = 300, seed: int = 0) -> dict:
    """Write ``maps/<name>`` with ``n`` synthetic points (ids are hex strings); returns facts about it."""
    t0 = time.perf_counter()
    ws = Workspace(workspace).ensure()
    rng = np.random.default_rng(seed + 1)
    xy, cluster = synthetic_points(n, blobs=blobs, seed=seed)
    ids = [f"{v:032x}" for v in rng.integers(0, 2**62, n, dtype=np.int64)]
    prob = np.where(cluster >= 0, rng.beta(5, 1.5, n), 0).astype(np.float32)
    outlier = (1 - prob) * rng.uniform(0.5, 1.0, n).astype(np.float32)
    points = points_table(ids=ids, xy=xy, cluster=cluster, probability=prob, outlier_score=outlier, is_new=rng.random(n) < 0.002)
    k = int(cluster.max()) + 1
    size = np.bincount(cluster[cluster >= 0], minlength=k)
    first: dict[int, list[str]] = {}
    for i, c in enumerate(cluster[: min(n, 200_000)]):
        if c >= 0 and len(first.setdefault(int(c), [])) < 5:
            first[int(c)].append(ids[i])
    clusters = clusters_table(cluster=np.arange(k), size=size, exemplars=[first.get(c, []) for c in range(k)], cohesion=np.full(k, 0.5))
    meta = {"name": name, "synthetic": True, "seed": seed, "n": n, "blobs": blobs, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_map(ws.map_dir(name), points=points, clusters=clusters, meta=meta)
    return {"path": str(ws.map_dir(name)), "n": n, "clusters": k, "seconds": round(time.perf_counter() - t0, 2), "ids": ids}
