"""The data sets of ``bench/curate.py``: where they are, and each embedded (cached) and mapped."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np

#: name -> (kind, images, labels, embedder)
DATASETS = {
    "mnist_test": ("idx", "mnist_test/t10k-images-idx3-ubyte.gz", "mnist_test/t10k-labels-idx1-ubyte.gz", "pixels:28"),
    "fashion_mnist": ("idx", "fashion_mnist_test_first4443/t10k-first4443-images-idx3-ubyte.gz", "fashion_mnist_test_first4443/t10k-first4443-labels-idx1-ubyte.gz", "pixels:28"),
    "coil20": ("folder", "coil20/images", None, "timm:tf_efficientnet_lite0"),
    "coil100_subset": ("folder", "coil100_subset/images", None, "timm:tf_efficientnet_lite0"),
    "orl_faces": ("folder", "orl_faces/images", None, "timm:tf_efficientnet_lite0"),
    # ORL with the face pipeline `corral embed` recommends for a collection of faces (not in the default run)
    "orl_faces_dlib": ("folder", "orl_faces/images", None, "dlib:face-resnet"),
    # Classes of very unequal size (the shared sets' are equal): per class a seeded random number of
    # its images, log-uniform between the two bounds, so a few classes are large and many small. The
    # loop's rules lean on a typical class size; these check them where there is none.
    "coil20_tail": ("tail", "coil20/images", (4, 72, 7), "timm:tf_efficientnet_lite0"),
    "coil100_tail": ("tail", "coil100_subset/images", (2, 18, 7), "timm:tf_efficientnet_lite0"),
}

#: The sets run when none is named (the issue's five; the face-model run is asked for by name).
DEFAULT_SETS = ("mnist_test", "fashion_mnist", "coil20", "coil100_subset", "orl_faces")


def read_idx(path: Path) -> np.ndarray:
    b = gzip.open(path).read()
    ndim = b[3]
    shape = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_folder(images: Path, labels: Path, dest: Path) -> None:
    """Write an IDX image set into ``dest`` as PNGs, one folder per label."""
    from PIL import Image

    x, y = read_idx(images), read_idx(labels)
    for i, (img, lab) in enumerate(zip(x, y)):
        (dest / str(lab)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dest / str(lab) / f"{i:05d}.png")


def tail_subset(src: Path, dest: Path, low: int, high: int, seed: int) -> None:
    """Copy into ``dest`` (one folder per class) a seeded random share of each class folder of
    ``src``: ``exp(uniform(log low, log high))`` images, rounded, at least ``low``. Copies, not links:
    a collection's links out of its folder are not followed."""
    import shutil

    rng = np.random.default_rng(seed)
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.is_file())
        n = min(len(files), max(low, int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))))
        (dest / cls.name).mkdir(parents=True)
        for k in sorted(rng.choice(len(files), n, replace=False)):
            shutil.copy(files[k], dest / cls.name / files[k].name)


def prepare(name: str, data: Path, out: Path, *, rebuild_map: bool) -> tuple[Path, dict[str, str], dict]:
    """Embed (cached) and map a data set; returns (workspace, truth by item id, timings)."""
    import shutil

    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.mapping import MapConfig, build_map
    from corral.storage.maps import list_maps
    from corral.storage.workspace import Workspace

    kind, images, labels, model = DATASETS[name]
    ws = out / name
    src = data / images
    if kind in ("idx", "tail"):
        # A folder derived from the shared data, written once: into a .part folder renamed when
        # whole, so an interrupted build is redone rather than embedded half-written.
        src = out / "images" / name
        if not src.exists():
            tmp = src.with_name(src.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if kind == "idx":
                idx_folder(data / images, data / labels, tmp)
            else:
                tail_subset(data / images, tmp, *labels)
            tmp.rename(src)
    t0 = time.perf_counter()
    res = embed(str(src), workspace=ws, config=EmbedConfig(model=model, progress=False))
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    if rebuild_map or not list_maps(ws):
        build_map(workspace=ws, config=MapConfig())
    t_map = time.perf_counter() - t0
    truth = {r["id"]: Path(r["uri"]).parent.name for r in Workspace(ws).items().to_pylist() if r["status"] == "ok"}
    return ws, truth, {"embed_s": round(t_embed, 1), "embedded_now": res.embedded, "map_s": round(t_map, 1), "model": model}
