"""A real labelled collection the repository needs no download for: scikit-learn's handwritten digits.

``digits_folder`` writes them as PNG files, one folder per digit (upscaled to 32 x 32 so they look
like small photos in the viewer); ``digits_workspace`` embeds them with the real embed stage
(``pixels:16``, the raw-pixel embedder for greyscale sets) and builds a real map with the default
settings. Digits are a set where the learning loop has work to do: the map's clusters mix 1, 7 and
9, 3, 5 and 8 a little, as real collections do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def digits_folder(root: Path, *, per_class: int = 40, seed: int = 0) -> dict[str, str]:
    """Write ``per_class`` digits of each class under ``root/<digit>/``; returns {path: class}."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    truth = {}
    for c in range(10):
        rows = rng.choice(np.flatnonzero(d.target == c), per_class, replace=False)
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for r in rows:
            px = (d.images[r] * (255 / 16)).astype(np.uint8)
            p = root / str(c) / f"{r:04d}.png"
            Image.fromarray(px).resize((32, 32), Image.Resampling.BILINEAR).convert("RGB").save(p)
            truth[str(p.resolve())] = str(c)
    return truth


def digits_workspace(root: Path, *, per_class: int = 40) -> tuple[Path, dict[str, str]]:
    """A workspace with the digits embedded and mapped; returns (workspace, class by item id)."""
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.mapping import MapConfig, build_map
    from corral.storage.workspace import Workspace

    truth_by_path = digits_folder(root / "digits", per_class=per_class)
    ws = root / "ws"
    embed(str(root / "digits"), workspace=ws, config=EmbedConfig(model="pixels:16", progress=False))
    build_map(workspace=ws, config=MapConfig())
    items = Workspace(ws).items().to_pylist()
    return ws, {r["id"]: truth_by_path[str(Path(r["uri"]).resolve())] for r in items if r["status"] == "ok"}


def by_class(ids: list[str], truth: dict[str, str]) -> dict[str, list[int]]:
    """The point indices of each class, in the order of their item ids.

    A map's point order follows its layout, and a layout moves a little from one CPU to another
    (UMAP's floating point), so a sample drawn in point order names different items on another
    machine; item ids are content hashes, and a sample drawn in their order is the same everywhere."""
    out: dict[str, list[int]] = {}
    for k in sorted(range(len(ids)), key=lambda k: ids[k]):
        out.setdefault(truth[ids[k]], []).append(k)
    return out
