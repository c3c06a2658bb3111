"""The built-in sample collection: handwritten digits that ship inside scikit-learn.

``write_sample(folder)`` writes them out as PNG files (one folder per digit, plus a
``manifest.csv`` with the true labels), so a fresh install can run the whole tool offline.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def write_sample(folder: str | Path, *, count: int = 600, size: int = 64, seed: int = 0) -> dict:
    """Write ``count`` digit images (``size`` px, balanced over the 10 digits) into ``folder``.

    Images go to ``folder/images/<digit>/``; ``folder/manifest.csv`` lists them with their labels.
    Returns ``{"folder", "images", "classes", "manifest"}`` (``folder`` is the images folder). Existing files are overwritten, so the
    call is repeatable.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if count < 10:
        raise ValueError(f"count={count}: the sample needs at least one image per digit (>= 10)")
    digits = load_digits()
    images, targets = digits.images, digits.target
    rng = np.random.default_rng(seed)
    per_class = int(np.ceil(count / 10))
    chosen: list[int] = []
    for d in range(10):
        idx = np.flatnonzero(targets == d)
        chosen.extend(rng.permutation(idx)[:per_class].tolist())
    chosen = sorted(chosen)[:count]
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in chosen:
        d = int(targets[i])
        arr = 255 - (images[i] / 16.0 * 255.0).astype(np.uint8)  # dark ink on white paper
        img = Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC)
        rel = Path("images") / str(d) / f"digit_{i:04d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(out / rel)
        rows.append({"uri": str(rel), "label": str(d)})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["uri", "label"])
        w.writeheader()
        w.writerows(rows)
    logger.info("wrote %d sample images of 10 digits to %s", len(rows), out)
    return {"folder": str(out / "images"), "images": len(rows), "classes": 10, "manifest": str(manifest)}
