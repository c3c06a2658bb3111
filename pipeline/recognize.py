"""Recognising images: decode and embed them exactly as the embed stage does, then ask the index.

The index records which embedder (registry name and weights hash) made its vectors;
:class:`ImageEncoder` builds that embedder and refuses to run when the weights found on this
machine are not the ones the index was built with, since their vectors would not be comparable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corral.pipeline import registry
from corral.pipeline.decode import DEFAULT_MAX_PIXELS, SkipItem, decode_for_model
from corral.pipeline.device import pick_device
from corral.storage.index import LabelIndex, RecognitionIndexError
from corral.storage.recognizer import Recognizer

logger = logging.getLogger(__name__)

#: Image file suffixes picked up when a folder is passed to ``recognize_paths``.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")


class ImageEncoder:
    """Bytes -> model pixels -> L2-normalised vectors, with the index's embedder.

    Args:
        model: the embedder's registry name (the index's ``model``).
        weights_hash: the hash the index recorded; another hash is refused.
        weights: a weight file or folder when the default lookup would not find them.
        device: auto, cpu, cuda or cuda:N.
        max_pixels: larger images are refused as decompression bombs.
        offline: never download the weights (``None``: as ``HF_HUB_OFFLINE`` says).
    """

    def __init__(self, *, model: str, weights_hash: str | None = None, weights: str | None = None, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS, offline: bool | None = None):
        if max_pixels < 1:
            raise ValueError(f"max_pixels={max_pixels}: must be >= 1")
        self.device, why = pick_device(device)
        self.embedder = registry.create_embedder(model, weights=weights, offline=offline).to(self.device)
        got = self.embedder.info.get("weights_hash")
        if weights_hash and got != weights_hash:
            raise RecognitionIndexError(
                f"the index was built with {model} weights {weights_hash}, but the weights found here hash to {got}; pass the same weights (--weights PATH) or rebuild the index with these"
            )
        self.model = model
        self.weights_hash = got
        self.max_pixels = max_pixels
        self.preprocess = self.embedder.preprocess
        logger.info("encoder %s on %s (%s)", model, self.device, why)

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def decode(self, data: bytes) -> np.ndarray:
        """Model-ready ``(size, size, 3)`` uint8 pixels; raises :class:`SkipItem` with a reason."""
        arr, _, _ = decode_for_model(data, self.preprocess, max_pixels=self.max_pixels)
        return arr

    def embed(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """A batch of decoded images -> float32 ``(n, dim)`` unit vectors."""
        import torch

        if not len(pixels):
            return np.empty((0, self.dim), np.float32)
        x = torch.from_numpy(np.stack(pixels)).to(self.device)
        return self.embedder.embed(x).to("cpu").numpy().astype(np.float32, copy=False)


def encoder_for(recognizer: Recognizer, *, weights: str | None = None, device: str = "auto") -> ImageEncoder:
    """The encoder matching an index's embedder."""
    meta = recognizer.index.meta
    return ImageEncoder(model=meta.model, weights_hash=meta.weights_hash, weights=weights, device=device)


def load_recognizer(path: str | os.PathLike[str]) -> Recognizer:
    """The recognizer of a workspace, a pulled version or an index folder."""
    return Recognizer(LabelIndex.load(path))


@dataclass
class PathResult:
    input: str
    label: str | None
    score: float | None
    top: list[list[Any]]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "label": self.label, "score": None if self.score is None else round(self.score, 6), "top": self.top}
        if self.error:
            out["error"] = self.error
        return out


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files as given; folders replaced by the image files under them (sorted)."""
    out: list[str] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            out.extend(str(f) for f in sorted(path.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        else:
            out.append(str(p))
    return out


def recognize_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    recognizer: Recognizer,
    encoder: ImageEncoder | None = None,
    k: int | None = None,
    threshold: float | None = None,
    batch_size: int = 32,
) -> list[PathResult]:
    """Recognise image files (folders are expanded); unreadable files get an error, not an exception."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    files = expand_paths(paths)
    enc = encoder or encoder_for(recognizer)
    if enc.dim != recognizer.index.dim:
        raise RecognitionIndexError(f"the encoder makes {enc.dim}-d vectors and the index holds {recognizer.index.dim}-d ones")
    results: list[PathResult | None] = [None] * len(files)
    for start in range(0, len(files), batch_size):
        chunk = range(start, min(start + batch_size, len(files)))
        good: list[int] = []
        pixels: list[np.ndarray] = []
        for i in chunk:
            try:
                data = Path(files[i]).read_bytes()
                pixels.append(enc.decode(data))
                good.append(i)
            except SkipItem as e:
                results[i] = PathResult(files[i], None, None, [], f"{e.reason}: {e.detail}" if e.detail else e.reason)
            except OSError as e:
                results[i] = PathResult(files[i], None, None, [], f"unreadable: {e.strerror or e}")
        if not good:
            continue
        decisions = recognizer.recognize(enc.embed(pixels), k=k, threshold=threshold)
        for i, d in zip(good, decisions):
            results[i] = PathResult(files[i], d.label, d.score, [[n, round(s, 6)] for n, s in d.top])
    return [r for r in results if r is not None]
