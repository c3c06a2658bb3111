"""The collections ``bench/map_cut.py`` scores cut rules on, and the cached work they share.

Labelled sets: the five shared sets embedded as ``bench/curate.py`` embeds them (the default
timm model for the folder sets, ``pixels:28`` for MNIST and Fashion-MNIST), ORL again with
``dlib:face-resnet``, and scikit-learn's bundled 8 x 8 digits (their 64 pixels as the vector).
Generated sets: seeded collections of known structure made in embedding space (class counts 5
to 500, skewed sizes, classes along a curve as a pose sweep makes them, near-twin classes).

For every collection the part of ``build_map`` that comes before the cut (kNN graph, umap-learn's
fuzzy graph, the 10-D clustering layout) runs once and is cached under ``bench/out/map_cut``,
as is the plain umap-learn + hdbscan run at their defaults on the same vectors.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")) / "data"
CACHE = REPO / "bench" / "out" / "map_cut"

#: name -> (kind, images, labels, embedder), as bench/curate.py's DATASETS, plus ORL with a face model.
LABELLED = {
    "coil20": ("folder", "coil20/images", None, "timm:tf_efficientnet_lite0"),
    "coil100_subset": ("folder", "coil100_subset/images", None, "timm:tf_efficientnet_lite0"),
    "orl_faces": ("folder", "orl_faces/images", None, "timm:tf_efficientnet_lite0"),
    "mnist_test": ("idx", "mnist_test/t10k-images-idx3-ubyte.gz", "mnist_test/t10k-labels-idx1-ubyte.gz", "pixels:28"),
    "fashion_mnist": ("idx", "fashion_mnist_test_first4443/t10k-first4443-images-idx3-ubyte.gz", "fashion_mnist_test_first4443/t10k-first4443-labels-idx1-ubyte.gz", "pixels:28"),
    "orl_faces_dlib": ("folder", "orl_faces/images", None, "dlib:face-resnet"),
    "sklearn_digits": ("sklearn", None, None, "raw:64"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_idx(path: Path) -> np.ndarray:
    b = gzip.open(path).read()
    ndim = b[3]
    shape = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def labelled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and class ids of a labelled set, embedded once and cached."""
    path = CACHE / "vectors" / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        return z["x"], z["y"]
    kind, images, labels, model = LABELLED[name]
    if kind == "sklearn":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    else:
        from PIL import Image

        from corral.pipeline.embed import EmbedConfig, embed
        from corral.storage.workspace import Workspace

        src = DATA / images if images else None
        if kind == "idx":
            src = CACHE / "images" / name
            if not (src / ".complete").exists():
                xs, ys = read_idx(DATA / images), read_idx(DATA / labels)
                for i, (img, lab) in enumerate(zip(xs, ys)):
                    (src / str(lab)).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(src / str(lab) / f"{i:05d}.png")
                (src / ".complete").touch()
        ws = CACHE / "workspaces" / name
        t0 = time.perf_counter()
        log(f"embedding {src} with {model} into {ws}")
        embed(str(src), workspace=ws, config=EmbedConfig(model=model, progress=False))
        log(f"  {time.perf_counter() - t0:.0f} s")
        es = Workspace(ws).default_embedding_set()
        ids, x = es.load(dtype=np.float32)
        items = es.items()
        cls = {i: Path(u).parent.name for i, u in zip(items.column("id").to_pylist(), items.column("uri").to_pylist())}
        _, y = np.unique([cls[i] for i in ids], return_inverse=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return x, y


# --------------------------------------------------------------------------------------------
# Generated collections


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(sizes: list[int], *, dim: int = 64, spread: float = 0.55, seed: int = 0, twins: int = 0, twin_gap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes of the given sizes around random directions; the first ``twins`` pairs of
    classes have centres only ``twin_gap`` (in units of the within-class spread) apart."""
    rng = np.random.default_rng(seed)
    k = len(sizes)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for t in range(twins):
        a, b = 2 * t, 2 * t + 1
        d = rng.normal(size=dim)
        d /= np.linalg.norm(d)
        centres[b] = centres[a] + d * twin_gap * spread
    # Anisotropic within-class noise: a few strong directions per class, as real embeddings have.
    xs, ys = [], []
    for c, s in enumerate(sizes):
        basis = rng.normal(size=(dim, dim)) * np.geomspace(1.0, 0.2, dim)[:, None]
        noise = rng.normal(size=(s, dim)) @ basis
        noise *= spread / np.sqrt((noise**2).sum(1).mean())
        xs.append(centres[c] + noise)
        ys.append(np.full(s, c))
    return _unit(np.concatenate(xs)), np.concatenate(ys)


def curves(k: int, per: int, *, dim: int = 64, length: float = 1.2, noise: float = 0.06, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes that each lie along a smooth open curve (a pose sweep: profile to frontal), the
    views evenly spaced along it, with a little noise; curves of different classes start near
    each other (every person's profile looks more alike than their frontal views)."""
    rng = np.random.default_rng(seed)
    shared_start = rng.normal(size=dim)
    shared_start /= np.linalg.norm(shared_start)
    xs, ys = [], []
    t = np.linspace(0.0, 1.0, per)[:, None]
    for c in range(k):
        own = rng.normal(size=dim)
        own /= np.linalg.norm(own)
        bend = rng.normal(size=dim)
        bend /= np.linalg.norm(bend)
        start = 0.6 * shared_start + 0.4 * own
        path = start + length * t * own + 0.4 * length * np.sin(np.pi * t) * bend
        xs.append(path + rng.normal(scale=noise, size=(per, dim)))
        ys.append(np.full(per, c))
    return _unit(np.concatenate(xs)), np.concatenate(ys)


def generated() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The generated collections, each seeded (same vectors on every run)."""
    rng = np.random.default_rng(7)
    zipf = sorted((np.clip(400 / np.arange(1, 31) ** 1.1, 6, None)).astype(int).tolist(), reverse=True)
    return {
        "gen_k5": blobs([120] * 5, seed=1),
        "gen_k20": blobs([40] * 20, seed=2),
        "gen_k50": blobs([25] * 50, seed=3),
        "gen_k200": blobs([12] * 200, seed=4),
        "gen_k500": blobs([6] * 500, seed=5, spread=0.45),
        "gen_skewed30": blobs(zipf, seed=6),
        "gen_mixed_sizes": blobs(rng.integers(8, 150, 40).tolist(), seed=8),
        "gen_curve20": curves(20, 29, seed=9),
        "gen_curve40": curves(40, 15, seed=10, length=0.9),
        "gen_twins20": blobs([35] * 20, seed=11, twins=6, twin_gap=1.0),
        "gen_twins_close": blobs([60] * 10, seed=12, twins=5, twin_gap=0.6),
    }


# --------------------------------------------------------------------------------------------
# The shared work: our clustering space, and the plain baseline


def cluster_space(name: str, x: np.ndarray) -> dict[str, Any]:
    """kNN graph, fuzzy graph and the 10-D clustering layout, as ``build_map`` makes them (cached)."""
    import scipy.sparse as sp

    path = CACHE / "spaces" / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        g = sp.csr_matrix((z["g_data"], z["g_indices"], z["g_indptr"]), shape=tuple(z["g_shape"]))
        return {"coords": z["coords"], "graph": g, "seconds": float(z["seconds"])}
    from corral.pipeline.knn import knn_graph
    from corral.pipeline.mapping import MapConfig
    from corral.pipeline.project import fuzzy_graph, initial_layout, layout

    cfg = MapConfig()
    n = x.shape[0]
    dims = cfg.resolved_cluster_dims(n)
    t0 = time.perf_counter()
    k = min(int(cfg.umap.n_neighbors), n - 1)
    kg = knn_graph(x, k=k, method=cfg.knn, faiss_params=cfg.faiss, device="cpu")
    graph = fuzzy_graph(kg.indices, kg.distances, params=cfg.umap, seed=cfg.seed)
    start = initial_layout(graph, data=x, n_components=dims, init=cfg.umap.resolved_init(n, dims), seed=cfg.seed)
    coords, _, _ = layout(graph, data=x, n_components=dims, params=cfg.umap, min_dist=0.0, seed=cfg.seed, backend="umap", device="cpu", knn=(kg.indices, kg.distances), start=start)
    secs = time.perf_counter() - t0
    g = graph.tocsr()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, coords=coords, g_data=g.data, g_indices=g.indices, g_indptr=g.indptr, g_shape=np.array(g.shape), seconds=secs)
    return {"coords": coords, "graph": g, "seconds": secs}


def plain(name: str, x: np.ndarray) -> dict[str, Any]:
    """``hdbscan.HDBSCAN().fit_predict(umap.UMAP().fit_transform(x))``, every setting at its default (cached)."""
    path = CACHE / "plain" / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        return {"labels": z["labels"], "seconds": float(z["seconds"])}
    import hdbscan
    import umap

    t0 = time.perf_counter()
    xy = umap.UMAP().fit_transform(x)
    labels = hdbscan.HDBSCAN().fit_predict(xy)
    secs = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, labels=labels, xy=xy, seconds=secs)
    return {"labels": labels, "seconds": secs}


if __name__ == "__main__":
    # Prepare (embed, lay out, run the baseline) every collection named, or all of them.
    import warnings

    warnings.filterwarnings("ignore")
    names = sys.argv[1:] or [*LABELLED, *generated()]
    gen = generated()
    for nm in names:
        xv, yv = gen[nm] if nm in gen else labelled(nm)
        t = time.perf_counter()
        cluster_space(nm, xv)
        plain(nm, xv)
        log(f"{nm}: {xv.shape}, {len(np.unique(yv))} classes, prepared in {time.perf_counter() - t:.0f} s")
