"""The map against plain umap-learn + hdbscan with default settings, on real labelled data.

For each data set, in one process and on the same vectors:

* ours: ``corral.pipeline.mapping.build_map`` with its defaults (FAISS kNN graph, UMAP to 10-D for
  clustering and to 2-D for the map, HDBSCAN with the cut chosen by modularity, noise handed to
  the nearest cluster);
* baseline: ``umap.UMAP().fit_transform(X)`` then ``hdbscan.HDBSCAN().fit_predict`` on the 2-D
  layout, everything at its defaults.

Both are scored against the true classes: ARI, AMI, the fraction of points in a cluster, and the
kNN preservation of the 2-D layout (the share of each point's 15 nearest neighbours in the input
space that are also among its 15 nearest on the map). numba compiles before either is timed.
Peak memory: the process's peak RSS, and per method the peak of numpy/Python allocations
(tracemalloc; FAISS's own C++ buffers are not in it).

Data: MNIST test (10k, pixels), and COIL-20, the COIL-100 subset and ORL faces embedded with
the pretrained default model (cached under bench/out/cache, about a minute per 1,500 images on
2 CPU cores). ``--scale`` adds a 70k x 784 MNIST-like set (the 10k test digits and six copies
shifted by one pixel) for speed; ``--synthetic N,DIM`` a Gaussian-mixture set of any size
(for GPU machines: ``--synthetic 1000000,768``). ``--split`` times splitting 10,000 items.

    python bench/map.py --out bench/out/map.json
    python bench/map.py --datasets mnist --scale
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib  # noqa: E402

DATA = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")) / "data"
CACHE = REPO / "bench" / "out" / "cache"
IMAGE_SETS = {"coil20": "coil20/images", "coil100_subset": "coil100_subset/images", "orl_faces": "orl_faces/images"}


def read_idx(path: Path) -> np.ndarray:
    b = gzip.open(path).read()
    ndim = b[3]
    shape = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist() -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(DATA / "mnist_test" / "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32) / 255.0
    y = read_idx(DATA / "mnist_test" / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def mnist_70k() -> tuple[np.ndarray, np.ndarray]:
    """The 10k test digits plus six copies shifted by one pixel (70k x 784)."""
    x = read_idx(DATA / "mnist_test" / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(DATA / "mnist_test" / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)]
    xs = [np.roll(x, s, axis=(1, 2)).reshape(10000, -1) for s in shifts]
    return np.concatenate(xs), np.tile(y, len(shifts))


def synthetic(n: int, dim: int, k: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mixture of ``k`` Gaussians on the unit sphere, like an embedding set of ``k`` classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(scale=0.9, size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def embedded(name: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """Vectors and labels of an image set embedded with the default model (cached)."""
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.storage.workspace import Workspace

    ws = CACHE / name
    src = DATA / IMAGE_SETS[name]
    sets = Workspace(ws).embedding_sets()
    if not sets or not sets[0].complete_shards():
        print(f"embedding {src} into {ws} (cached for later runs)", file=sys.stderr, flush=True)
        embed(str(src), workspace=ws, config=EmbedConfig(progress=False))
    es = Workspace(ws).default_embedding_set()
    ids, x = es.load()
    items = es.items()
    cls = {i: Path(u).parent.name for i, u in zip(items.column("id").to_pylist(), items.column("uri").to_pylist())}
    _, y = np.unique([cls[i] for i in ids], return_inverse=True)
    return x.astype(np.float32), y, ws


def as_workspace(name: str, x: np.ndarray, root: Path = CACHE) -> Path:
    """A workspace holding ``x`` as an embedding set (for sets that are not images)."""
    from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table

    ws = root / name
    es = Workspace(ws).embedding_set("vectors")
    if es.sidecar_path.exists() and es.sidecar().get("count") == len(x):
        return ws
    es.path.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:08d}" for i in range(len(x))]
    emb, items = es.shard_paths(0)
    atomic_write_table(emb, embedding_table(ids, x))
    atomic_write_table(items, items_table([{"id": i, "uri": f"{name}/{i}", "status": "ok"} for i in ids]))
    atomic_write_json(es.sidecar_path, {"model": f"raw:{name}", "weights_hash": None, "dim": int(x.shape[1]), "dtype": "float32", "count": len(x)})
    return ws


# --------------------------------------------------------------------------------------------


def knn_preservation(x: np.ndarray, xy: np.ndarray, k: int = 15, sample: int = 20000) -> float:
    """Mean share of each point's ``k`` nearest input neighbours that stay among its ``k`` nearest in 2-D."""
    import faiss

    from corral.pipeline.knn import FaissParams, knn_query

    n = len(x)
    rows = np.random.default_rng(0).choice(n, min(n, sample), replace=False)
    # Exact neighbours in the input space (torch on a GPU, FAISS Flat on the CPU).
    a, _, _ = knn_query(x, x[rows], k=k + 1, faiss_params=FaissParams(index_factory="Flat"))
    lo = faiss.IndexFlatL2(2)
    lo.add(np.ascontiguousarray(xy, np.float32))
    _, b = lo.search(np.ascontiguousarray(xy[rows], np.float32), k + 1)
    hits = [len((set(p) - {r}) & (set(q) - {r})) / k for r, p, q in zip(rows, a, b)]
    return float(np.mean(hits))


def scores(y: np.ndarray, labels: np.ndarray, x: np.ndarray, xy: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    return {
        "ari": round(float(adjusted_rand_score(y, labels)), 4),
        "ami": round(float(adjusted_mutual_info_score(y, labels)), 4),
        "clustered": round(float(np.mean(labels >= 0)), 4),
        "clusters": int(labels.max()) + 1,
        "knn_preservation": round(knn_preservation(x, xy), 4),
    }


def run_ours(ws: Path, x: np.ndarray, y: np.ndarray, *, device: str, layout: str = "auto", knn: str = "auto", seed: int | None = 0) -> dict[str, Any]:
    from corral.pipeline.mapping import MapConfig, build_map
    from corral.storage.maps import read_map

    cfg = MapConfig(device=device, layout=layout, knn=knn, seed=seed)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = build_map(workspace=ws, config=cfg)
    total = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    m = read_map(ws, res.name)
    from corral.storage.workspace import Workspace

    ids, _ = Workspace(ws).default_embedding_set().load()
    order = {i: r for r, i in enumerate(m.points.column("id").to_pylist())}
    rows = np.array([order[i] for i in ids])
    xy = np.stack([m.points.column("x").to_numpy(), m.points.column("y").to_numpy()], 1)[rows]
    labels = m.points.column("cluster").to_numpy()[rows]
    out = {"seconds": {k: round(v, 2) for k, v in res.seconds.items()} | {"total": round(total, 2)}, "peak_alloc_mb": round(peak / 2**20, 1)}
    out |= scores(y, labels, x, xy)
    out["seconds_parts"] = m.meta.get("seconds_parts", {})
    out["clustered_before_assignment"] = round(1 - m.meta["counts"]["noise_fraction_before_assignment"], 4)
    out["params"] = {
        "hdbscan": {k: m.meta["params"]["hdbscan"][k] for k in ("min_cluster_size", "cluster_selection_method")},
        "knn": m.meta["params"]["knn"]["method"],
        "layout": m.meta["params"]["layout"]["used"],
    }
    return out


def run_baseline(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import hdbscan
    import umap

    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    xy = umap.UMAP().fit_transform(x)
    t1 = time.perf_counter()
    labels = hdbscan.HDBSCAN().fit_predict(xy)
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = {"seconds": {"umap": round(t1 - t0, 2), "cluster": round(t2 - t1, 2), "total": round(t2 - t0, 2)}, "peak_alloc_mb": round(peak / 2**20, 1)}
    return out | scores(y, labels, x, xy)


def warm_up() -> float:
    """Compile the numba code both sides use, so neither side's timing includes it."""
    import hdbscan
    import umap

    from corral.pipeline.recluster import warm_up as warm_split

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    umap.UMAP(n_epochs=5).fit_transform(x)
    umap.UMAP(n_epochs=5, random_state=0).fit_transform(x)
    hdbscan.HDBSCAN().fit_predict(x[:, :2])
    import tempfile

    from corral.pipeline.mapping import MapConfig, build_map
    from corral.pipeline.project import UmapParams

    with tempfile.TemporaryDirectory() as d:
        ws = as_workspace("warm", x, root=Path(d))
        cfg = MapConfig(umap=UmapParams(n_epochs=5))
        build_map(workspace=ws, config=cfg)
    warm_split()
    return time.perf_counter() - t0


def time_split(ws: Path, n: int = 10000) -> dict[str, Any]:
    """Seconds to split ``n`` items of a map (numba already compiled), best of three."""
    from corral.pipeline.recluster import split
    from corral.storage.maps import read_map

    m = read_map(ws)
    ids = m.points.column("id").to_pylist()[:n]
    best, parts = float("inf"), 0
    for _ in range(3):
        r = split(workspace=ws, map_name=m.name, ids=ids)
        best, parts = min(best, r.seconds), len(r.parts)
    return {"items": len(ids), "seconds": round(best, 3), "parts": parts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="mnist,coil20,coil100_subset,orl_faces", help="comma-separated: mnist, coil20, coil100_subset, orl_faces")
    p.add_argument("--scale", action="store_true", help="also time a 70k x 784 MNIST-like set (minutes on 2 cores)")
    p.add_argument("--synthetic", default=None, metavar="N,DIM", help="also run a Gaussian-mixture set of N vectors of DIM dimensions")
    p.add_argument("--no-baseline", action="store_true", help="skip umap-learn + hdbscan (for sizes where it takes too long)")
    p.add_argument("--device", default="auto", help="device for ours: auto, cpu, cuda")
    p.add_argument("--layout", default="auto", choices=("auto", "umap", "torch", "cuml"), help="layout optimiser for ours (default auto)")
    p.add_argument("--seed", default="0", help="seed for ours (default 0); 'none' runs umap-learn's layout in parallel like the baseline")
    p.add_argument("--knn", default="auto", choices=("auto", "faiss", "torch"), help="kNN engine for ours (default auto)")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result: dict[str, Any] = {"machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()}, "datasets": {}}
    result["warm_up_seconds"] = round(warm_up(), 1)
    jobs: list[tuple[str, Any]] = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "mnist":
            jobs.append(("mnist_test_pixels", lambda: (*mnist(), None)))
        elif name in IMAGE_SETS:
            jobs.append((name, lambda name=name: embedded(name)))
        else:
            p.error(f"--datasets {name!r}: expected mnist, coil20, coil100_subset or orl_faces")
    if args.scale:
        jobs.append(("mnist_70k_shifted", lambda: (*mnist_70k(), None)))
    if args.synthetic:
        n, dim = (int(v) for v in args.synthetic.split(","))
        jobs.append((f"synthetic_{n}x{dim}", lambda: (*synthetic(n, dim), None)))
    for name, load in jobs:
        x, y, ws = load()
        if ws is None:
            ws = as_workspace(name, x)
        print(f"{name}: {x.shape[0]} x {x.shape[1]}", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"n": int(x.shape[0]), "dim": int(x.shape[1]), "classes": int(len(np.unique(y)))}
        seed = None if str(args.seed).lower() == "none" else int(args.seed)
        entry["ours"] = run_ours(ws, x, y, device=args.device, layout=args.layout, knn=args.knn, seed=seed)
        print(f"  ours {json.dumps(entry['ours'])}", file=sys.stderr, flush=True)
        if not args.no_baseline:
            entry["baseline"] = run_baseline(x, y)
            print(f"  baseline {json.dumps(entry['baseline'])}", file=sys.stderr, flush=True)
            b, o = entry["baseline"], entry["ours"]
            entry["ours_vs_baseline"] = {
                "speedup": round(b["seconds"]["total"] / max(o["seconds"]["total"], 1e-9), 2),
                "ari_delta": round(o["ari"] - b["ari"], 4),
                "ami_delta": round(o["ami"] - b["ami"], 4),
                "knn_preservation_delta": round(o["knn_preservation"] - b["knn_preservation"], 4),
            }
        if name == "mnist_test_pixels":
            result["split_10k"] = time_split(ws)
        result["datasets"][name] = entry
    result["peak_rss_mb"] = peak_rss_mib()
    emit_result(result, args.out)
    return 0


def _cpus() -> int:
    from corral.pipeline.device import cpu_count

    return cpu_count()


if __name__ == "__main__":
    sys.exit(main())
