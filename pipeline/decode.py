"""Turning file bytes into model-ready pixels, safely.

Everything here runs inside decode worker processes, so it is plain functions of bytes. A file that
cannot be decoded raises :class:`SkipItem` with a short machine-readable reason; the job records it
and carries on.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Refuse, never guess at, truncated files.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Largest image (in pixels) we decode; bigger ones are decompression bombs. PIL's own default
#: warns at 89M pixels and refuses at twice that; we refuse at the warning level.
DEFAULT_MAX_PIXELS = 89_478_485

#: Reasons a file is skipped (stable strings: they key the summary's ``skipped_by_reason``).
REASONS = (
    "empty",  # zero bytes
    "not_an_image",  # text, random bytes, unknown format
    "truncated",  # the file ends early or its data is corrupt
    "too_large",  # over the pixel limit (decompression bomb)
    "unreadable",  # the path or object could not be read (permissions, vanished, S3 error)
    "decode_error",  # anything else the decoder raised
)


class SkipItem(Exception):
    """This file cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def content_id(data: bytes) -> str:
    """The item id: a 128-bit BLAKE2b hash of the bytes, in hex."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: resize the short side, centre-crop, normalise.

    Normalisation happens on the model's device (see ``corral.pipeline.embed``); decoding produces uint8.
    """

    size: int  # output side (square crop), e.g. 224
    resize: int  # short side before cropping, e.g. 256 for crop_pct 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def as_dict(self) -> dict:
        return {
            "size": self.size,
            "resize": self.resize,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop": "center",
        }


_PIL_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited onto white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            hi: float = 65535 if mode.startswith("I;16") or arr.max() > 255 else 255
            arr = np.clip(arr.astype(np.float32) * (255.0 / hi), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        return Image.fromarray(np.nan_to_num(arr).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_to: int | None = None) -> Image.Image:
    """Decode bytes to an upright RGB image, or raise :class:`SkipItem`.

    The format is read from the content, never from the file name. ``draft_to`` lets JPEG decode at
    1/2, 1/4 or 1/8 scale directly when the target short side is much smaller than the file.
    """
    return _open_upright(data, max_pixels=max_pixels, draft_to=draft_to)[0]


def _open_upright(data: bytes, *, max_pixels: int, draft_to: int | None) -> tuple[Image.Image, int, int]:
    """:func:`open_image` plus the file's full-resolution width and height once upright."""
    if not data:
        raise SkipItem("empty", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise SkipItem("too_large", f"{w}x{h} pixels is over the limit of {max_pixels}")
            if getattr(img, "is_animated", False):
                img.seek(0)
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
            if draft_to and img.format == "JPEG":
                # After a 90-degree EXIF rotation width and height swap, but the short side stays.
                img.draft("RGB", (draft_to, draft_to))
            img.load()
    except SkipItem:
        raise
    except UnidentifiedImageError as e:
        raise SkipItem("not_an_image", str(e)[:200]) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipItem("too_large", str(e)[:200]) from None
    except (OSError, SyntaxError, EOFError) as e:
        msg = str(e)
        reason = "truncated" if ("truncated" in msg or "broken data" in msg or "EOF" in msg) else "decode_error"
        raise SkipItem(reason, msg[:200]) from None
    except Exception as e:  # the decoders raise a zoo of types on hostile input
        raise SkipItem("decode_error", f"{type(e).__name__}: {e}"[:200]) from None
    if orientation in (5, 6, 7, 8):  # turned a quarter: width and height swap
        w, h = h, w
    try:
        if orientation and orientation != 1:
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img), w, h
    except Exception as e:
        raise SkipItem("decode_error", f"{type(e).__name__}: {e}"[:200]) from None


#: bytes per pixel PIL holds a decoded image of each mode in (RGB is padded to 4); others take 4
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def decode_cost(img: Image.Image) -> int:
    """Bytes that decoding an opened (not yet loaded) image to RGB needs at most: its pixels as the
    file's mode holds them plus one RGB copy. Read from the header, so it is known before decoding;
    call it after any :meth:`~PIL.Image.Image.draft`, which shrinks what is decoded."""
    w, h = img.size
    return w * h * (_MODE_BYTES.get(img.mode, 4) + 4)


def shrink_on_decode(img: Image.Image, side: int) -> None:
    """Have an opened (not yet loaded) image decode smaller where its format can do so directly,
    keeping both sides at least ``side``: JPEG at 1/2, 1/4 or 1/8 scale (draft mode), JPEG 2000 at
    any power of two (its resolution levels). Other formats (PNG, WebP, ...) decode full size."""
    if img.format == "JPEG":
        img.draft("RGB", (side, side))
    elif img.format == "JPEG2000":
        levels = 0
        while levels < 5 and min(img.size) >> (levels + 1) >= side:
            levels += 1
        if levels:
            img.reduce = levels  # type: ignore[assignment,method-assign]  # the plugin's property: levels to drop


def bytes_decode_cost(data: bytes, *, draft_to: int | None = None) -> int:
    """:func:`decode_cost` of image bytes (as :func:`open_image` with ``draft_to`` decodes them);
    0 when the header does not parse, since such bytes fail before any pixel is decoded."""
    try:
        img = Image.open(io.BytesIO(data))
        if draft_to and img.format == "JPEG":
            img.draft("RGB", (draft_to, draft_to))
        return decode_cost(img)
    except Exception:  # not an image, a truncated header: open_image says why
        return 0


def resize_center_crop(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Resize the short side to ``pre.resize`` and centre-crop ``pre.size``; HWC uint8."""
    w, h = img.size
    scale = pre.resize / min(w, h)
    nw, nh = max(pre.size, round(w * scale)), max(pre.size, round(h * scale))
    img = img.resize((nw, nh), _PIL_INTERP.get(pre.interpolation, Image.Resampling.BICUBIC), reducing_gap=3.0)
    left, top = (nw - pre.size) // 2, (nh - pre.size) // 2
    img = img.crop((left, top, left + pre.size, top + pre.size))
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


def decode_for_model(data: bytes, pre: Preprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int, int]:
    """Bytes to a ``(size, size, 3)`` uint8 array plus the original width and height."""
    # The full-resolution size even when draft mode decoded a smaller one, read while decoding: a
    # second look at the file would decode a PNG twice (its EXIF may follow the pixels).
    img, w, h = _open_upright(data, max_pixels=max_pixels, draft_to=pre.resize)
    return resize_center_crop(img, pre), w, h


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def jpeg_orientation(data: bytes) -> int:
    """EXIF orientation of a JPEG (1 when absent), read without decoding pixels."""
    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1
