"""A real group-photo set for the box revision tests: ORL faces pasted onto canvases, detected with
dlib's HOG face detector, embedded with dlib's face ResNet and mapped, built once per process.

Photo ``group_000.png`` is laid out by hand so that the detector is wrong in known places: three
people side by side (found, with boxes looser or tighter than the face), a face on a framed
"poster" (found: a false box a curator deletes) and a face upside down (missed: a box a curator
draws). The other photos are made by ``bench.groups.compose``. ORL is in the shared evaluation
data; without it the tests that need these faces skip, as the detector tests do.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from bench.groups import background, compose, face_box, orl_photos
from tests.conftest import shared_data

SCALE = 1.6
#: where the hand-laid photo puts its tiles: x, y (tiles are 92 x 112 ORL photos scaled by SCALE)
PEOPLE_AT = ((20, 40), (200, 40), (380, 40))
POSTER_AT = (585, 40)  # a smaller tile (scale 1.1) inside a frame
UPSIDE_DOWN_AT = (560, 250)
SIZE = (760, 460)


@dataclass(frozen=True)
class GroupSet:
    root: Path  # the built workspace (copy it before changing anything)
    photos: Path  # the folder of group photos
    people: list[tuple[str, tuple[float, float, float, float]]]  # group_000's people: ORL folder, true face box
    poster: tuple[float, float, float, float]  # the face on the poster (a box to delete)
    missed: tuple[float, float, float, float]  # the upside-down face (a box to draw)
    missed_person: str
    faces: list  # the other photos' faces (bench.groups.Face: image, person, box)


_lock = threading.Lock()
_built: dict[str, GroupSet] = {}


def _tile(path: Path, scale: float) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB").resize((round(92 * scale), round(112 * scale)), Image.Resampling.BICUBIC)


def _hand_laid(out: Path, photos: list[tuple[str, Path]]) -> tuple[list, tuple, tuple, str]:
    canvas = background(*SIZE, seed=4242)
    people = []
    for (person, path), (x, y) in zip(photos[:3], PEOPLE_AT):
        tile = _tile(path, SCALE)
        canvas.paste(tile, (x, y))
        people.append((person, face_box((x, y, tile.width, tile.height))))
    poster = _tile(photos[3][1], 1.1)
    px, py = POSTER_AT
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([px - 12, py - 12, px + poster.width + 11, py + poster.height + 11], fill=(235, 230, 215), outline=(40, 40, 40), width=4)
    canvas.paste(ImageOps.grayscale(poster).convert("RGB"), (px, py))
    person, path = photos[4]
    flipped = _tile(path, SCALE).rotate(180)
    ux, uy = UPSIDE_DOWN_AT
    canvas.paste(flipped, (ux, uy))
    fx, fy, fw, fh = face_box((ux, uy, flipped.width, flipped.height))
    missed = (ux + flipped.width - (fx - ux) - fw, uy + flipped.height - (fy - uy) - fh, fw, fh)  # the face box turned too
    canvas.save(out / "group_000.png")
    return people, face_box((px, py, poster.width, poster.height)), missed, person


def group_set(tmp: Path) -> GroupSet:
    """The built set (once per process; ``tmp`` is where the first caller lets it live)."""
    orl = shared_data("orl_faces", "images")
    with _lock:
        if "set" in _built:
            return _built["set"]
        from corral.pipeline.embed import EmbedConfig, embed
        from corral.pipeline.mapping import build_map

        src = tmp / "photos"
        src.mkdir(parents=True)
        photos = orl_photos(orl, people=8, photos=range(0, 2), seed=17)
        people, poster, missed, missed_person = _hand_laid(src, photos)
        faces = compose(src, photos[5:14], per_image=3, size=SIZE, scale=(SCALE, SCALE), seed=17, prefix="more")
        ws = tmp / "ws"
        embed(str(src), workspace=ws, config=EmbedConfig(detector="dlib:hog-face", model="dlib:face-resnet", progress=False, batch_size=8))
        build_map(workspace=ws)
        _built["set"] = GroupSet(ws, src, people, poster, missed, missed_person, faces)
        return _built["set"]


def copy_ws(gs: GroupSet, dest: Path) -> Path:
    """A fresh copy of the built workspace (no labels, no users)."""
    shutil.copytree(gs.root, dest, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json", "cache"))
    return dest
