"""A corpus of awkward and hostile image files, generated in code.

``make_corpus(folder)`` returns ``(good, bad)``: the files that must decode (name -> what they
are) and the files that must be skipped (name -> expected reason).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    return Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)


def halves(size=(80, 40)) -> Image.Image:
    """Left half red, right half blue: orientation is visible in the pixels."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid-looking PNG header claiming ``width x height`` pixels, with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def make_corpus(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, str] = {}
    bad: dict[str, str] = {}

    def save(name: str, img: Image.Image, fmt: str, **kw) -> None:
        img.save(folder / name, fmt, **kw)

    save("rgb.jpg", _photo(1), "JPEG", quality=90)
    good["rgb.jpg"] = "RGB JPEG"
    (folder / "rotated.jpg").write_bytes(jpeg_with_orientation(halves(), 6))
    good["rotated.jpg"] = "EXIF orientation 6 (stored 80x40, shown 40x80)"
    save("grey.png", _photo(2).convert("L"), "PNG")
    good["grey.png"] = "greyscale"
    pal = _photo(3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    save("palette.png", pal, "PNG", transparency=0)
    good["palette.png"] = "palette with transparency"
    rgba = _photo(4).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, :, 3] = 128
    save("rgba.png", Image.fromarray(a), "PNG")
    good["rgba.png"] = "RGBA"
    save("cmyk.jpg", _photo(5).convert("CMYK"), "JPEG", quality=90)
    good["cmyk.jpg"] = "CMYK JPEG"
    arr16 = (np.linspace(0, 65535, 96 * 72).reshape(72, 96)).astype(np.uint16)
    Image.fromarray(arr16).save(folder / "deep16.png")  # mode I;16
    good["deep16.png"] = "16-bit greyscale PNG"
    frames = [_photo(10 + i) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good["animated.gif"] = "animated GIF (first frame)"
    buf = io.BytesIO()
    _photo(6).save(buf, "PNG")
    (folder / "liar.jpg").write_bytes(buf.getvalue())
    good["liar.jpg"] = "a PNG named .jpg"
    save("sub_webp.webp", _photo(7), "WEBP")
    good["sub_webp.webp"] = "WebP"

    (folder / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty"
    full = io.BytesIO()
    _photo(8, size=(400, 300)).save(full, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    bad["truncated.jpg"] = "truncated"
    (folder / "notes.txt").write_text("this is not an image\n" * 20)
    bad["notes.txt"] = "not_an_image"
    (folder / "noise.jpg").write_bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    bad["noise.jpg"] = "not_an_image"
    (folder / "bomb.png").write_bytes(bomb_png())
    bad["bomb.png"] = "too_large"
    os.symlink(folder / "does-not-exist.jpg", folder / "dangling.jpg")
    bad["dangling.jpg"] = "unreadable"
    return good, bad
