"""A small labelled image set the tests draw themselves, for tests that need real image files
but do not judge quality on an evaluation set (those use the shared data and skip without it).

Each class is one distinct synthetic object (a coloured shape or texture) drawn at many poses:
rotated, scaled and shifted over a noisy background that every class shares, so a pretrained
embedder sees objects, not a class-coloured background. The layout follows the folder-per-class
evaluation sets: ``images/obj01/obj1__0.png`` ... and a ``manifest.csv`` (``path,label``, paths
relative to the set's folder). The set is drawn once per test session into a temporary folder.
"""

from __future__ import annotations

import atexit
import csv
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = 8
POSES = 36
SIZE = 128

_lock = threading.Lock()
_root: Path | None = None


def _polygon(kind: str, k: int = 0) -> np.ndarray:
    """Unit-radius outline points of a shape centred on the origin."""
    if kind == "square":
        return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float) * 0.75
    if kind == "triangle":
        a = np.deg2rad([90, 210, 330])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if kind == "star":
        a = np.deg2rad(np.arange(10) * 36 + 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if kind == "cross":
        w = 0.3
        return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)], float)
    if kind == "hexagon":
        a = np.deg2rad(np.arange(6) * 60)
        return np.stack([np.cos(a), np.sin(a)], 1)
    raise ValueError(kind)


def _draw(cls: int, pose: int, *, size: int = SIZE, seed: int = 0) -> Image.Image:
    """Object ``cls`` (0-based) at pose ``pose``: drawn at twice the size, then scaled down."""
    rng = np.random.default_rng([seed, cls, pose])
    big = size * 2
    bg = rng.normal(110, 12, (big, big, 1)).clip(0, 255) * np.ones((1, 1, 3))
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    angle = np.deg2rad(pose * 360 / POSES)
    scale = big * (0.26 + 0.1 * ((pose * 7) % POSES) / POSES)
    cx, cy = big / 2 + rng.uniform(-0.08, 0.08, 2) * big
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def place(pts: np.ndarray, r: float = 1.0) -> list[tuple[float, float]]:
        q = (pts * r) @ rot.T * scale + (cx, cy)
        return [tuple(p) for p in q]

    kind = cls % CLASSES
    if kind == 0:  # red disc with a white ring and a dark centre
        for r, colour in ((1.0, (210, 30, 30)), (0.7, (245, 245, 245)), (0.45, (210, 30, 30)), (0.2, (20, 20, 20))):
            d.ellipse([cx - r * scale, cy - r * scale, cx + r * scale, cy + r * scale], fill=colour)
    elif kind == 1:  # blue square with a yellow corner mark
        d.polygon(place(_polygon("square")), fill=(30, 60, 220))
        d.polygon(place(_polygon("square") * 0.3 + (0.45, 0.45)), fill=(240, 220, 30))
    elif kind == 2:  # green triangle
        d.polygon(place(_polygon("triangle")), fill=(40, 190, 60), outline=(10, 80, 20), width=6)
    elif kind == 3:  # yellow star
        d.polygon(place(_polygon("star")), fill=(250, 210, 20))
    elif kind == 4:  # black and white checkerboard tile
        n = 6
        for i in range(n):
            for j in range(n):
                cell = np.array([(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)], float) / n * 1.6 - 0.8
                d.polygon(place(cell), fill=(15, 15, 15) if (i + j) % 2 else (240, 240, 240))
    elif kind == 5:  # orange and white stripes
        n = 7
        for i in range(n):
            band = np.array([(-0.85, i), (0.85, i), (0.85, i + 1), (-0.85, i + 1)], float)
            band[:, 1] = band[:, 1] / n * 1.7 - 0.85
            d.polygon(place(band), fill=(250, 130, 20) if i % 2 == 0 else (250, 250, 250))
    elif kind == 6:  # purple cross
        d.polygon(place(_polygon("cross")), fill=(140, 40, 170))
    else:  # hollow cyan hexagon with dots
        d.polygon(place(_polygon("hexagon")), fill=(30, 200, 210))
        d.polygon(place(_polygon("hexagon"), 0.55), fill=tuple(int(v) for v in bg[0, 0]))
        for p in place(_polygon("hexagon"), 0.78):
            d.ellipse([p[0] - 0.07 * scale, p[1] - 0.07 * scale, p[0] + 0.07 * scale, p[1] + 0.07 * scale], fill=(20, 20, 20))
    return img.resize((size, size), Image.LANCZOS)


def write_set(root: Path, *, classes: int = CLASSES, poses: int = POSES, size: int = SIZE, seed: int = 0) -> Path:
    """Draw ``classes`` objects x ``poses`` poses under ``root``; returns ``root``."""
    rows = []
    for c in range(classes):
        folder = root / "images" / f"obj{c + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(poses):
            name = f"obj{c + 1}__{k}.png"
            _draw(c, k, size=size, seed=seed).save(folder / name)
            rows.append((f"images/{folder.name}/{name}", folder.name))
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return root


def generated_data(*parts: str) -> Path:
    """A path under the generated set (drawn on first use, once per session), like ``shared_data``."""
    global _root
    with _lock:
        if _root is None:
            tmp = Path(tempfile.mkdtemp(prefix="corral-generated-"))
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            _root = write_set(tmp / "set")
    return _root.joinpath(*parts)
