"""Group photos made from ORL faces: several people pasted onto one canvas, positions known.

ORL photos are head-and-shoulders shots framed alike (92 x 112 px), so the face inside a pasted
photo sits at the same place in every tile: :data:`FACE_IN_TILE` (measured once as the mean box
of dlib's HOG and CNN detectors and OpenCV's Haar cascade over 100 ORL photos, pasted at 2x).
The ground-truth face box of a pasted photo is that fraction of its tile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: The face inside an ORL tile, as fractions of the tile: x0, y0, x1, y1.
FACE_IN_TILE = (0.05, 0.22, 0.90, 0.92)


@dataclass(frozen=True)
class Face:
    image: str  # file name of the group photo
    person: str  # ORL folder name (the identity)
    source: str  # the ORL photo pasted
    tile: tuple[int, int, int, int]  # where it was pasted: x, y, w, h
    box: tuple[float, float, float, float]  # the face inside it: x, y, w, h (ground truth)


def face_box(tile: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    x, y, w, h = tile
    fx0, fy0, fx1, fy1 = FACE_IN_TILE
    return (x + fx0 * w, y + fy0 * h, (fx1 - fx0) * w, (fy1 - fy0) * h)


def background(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random colour field with a little texture (no faces in it)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(50, 210, (5, 7, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-6, 7, img.shape, dtype=np.int16)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def compose(out: Path, photos: list[tuple[str, Path]], *, per_image: int = 4, size=(900, 600), scale=(1.6, 2.2), seed: int = 0, prefix: str = "group") -> list[Face]:
    """Paste ``photos`` (``(person, path)``) ``per_image`` at a time onto canvases in ``out``.

    Tiles never overlap; each is scaled by a random factor in ``scale``. Returns every face pasted.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    width, height = size
    faces: list[Face] = []
    for n, start in enumerate(range(0, len(photos), per_image)):
        canvas = background(width, height, seed * 10_000 + n)
        placed: list[tuple[int, int, int, int]] = []
        name = f"{prefix}_{n:03d}.png"
        for person, path in photos[start : start + per_image]:
            s = rng.uniform(*scale)
            tw, th = round(92 * s), round(112 * s)
            for _ in range(500):
                x, y = rng.randint(0, width - tw), rng.randint(0, height - th)
                if all(x + tw <= px or px + pw <= x or y + th <= py or py + ph <= y for px, py, pw, ph in placed):
                    break
            else:
                raise RuntimeError(f"no room for another {tw}x{th} tile on {name}")
            tile = (x, y, tw, th)
            placed.append(tile)
            with Image.open(path) as im:
                canvas.paste(im.convert("RGB").resize((tw, th), Image.Resampling.BICUBIC), (x, y))
            faces.append(Face(name, person, path.name, tile, face_box(tile)))
        canvas.save(out / name)
    return faces


def orl_photos(root: Path, *, people: int, photos: range, skip_people: int = 0, seed: int = 0) -> list[tuple[str, Path]]:
    """``(person, path)`` for the given photo numbers of ORL people, shuffled (seeded)."""
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)[skip_people : skip_people + people]
    out = []
    for folder in folders:
        files = sorted(folder.glob("*.png"), key=lambda f: (len(f.stem), f.stem))
        out += [(folder.name, files[i]) for i in photos if i < len(files)]
    random.Random(seed).shuffle(out)
    return out
