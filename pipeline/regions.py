"""Recognising what is inside a photo: detect, embed each box as the embed stage does, ask the index.

A workspace embedded with a detector (``corral embed SOURCE --detector face --model
dlib:face-resnet``) whose crops were named becomes a recognition index of crops
(``corral index build``). :class:`RegionEncoder` turns a new photo into boxes and vectors with the
same detector, crop geometry and embedder, and :func:`recognize_regions` answers a name (or
unknown) per box, so a group photo of people already named comes back with their names at their
boxes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.pipeline import crops as cropping
from corral.pipeline import registry
from corral.pipeline.decode import SkipItem, open_image
from corral.pipeline.detect import create_detector, resolve_name
from corral.pipeline.device import pick_device
from corral.pipeline.embed import EmbedConfig

logger = logging.getLogger(__name__)

#: The embed stage's defaults: a photo is cut as the stage cuts it unless told otherwise.
_STAGE = EmbedConfig()


@dataclass
class Regions:
    """The boxes found in one image and their vectors."""

    width: int
    height: int
    bboxes: list[list[int]]  # [x, y, w, h] in image pixels
    scores: list[float]  # detector scores
    categories: list[str]  # object class per box ("" for face detectors)
    vectors: np.ndarray  # float32 [k, dim], L2-normalised
    dropped: dict[str, int] = field(default_factory=dict)  # boxes cleaned away, by reason


class RegionEncoder:
    """Detector + embedder for one image at a time, with the embed stage's crop rules.

    Args:
        detector: a detector name or ``face`` (see ``corral detectors``).
        model: the embedder's registry name, e.g. ``dlib:face-resnet``.
        weights_hash: when given (an index's), weights that hash otherwise are refused.
        weights, detector_weights: weight files when the default lookup would not find them.
        min_score, min_size, pad, detect_max_side, max_pixels: as for ``corral embed`` (use the same
            values); the defaults and the rules are :class:`corral.pipeline.embed.EmbedConfig`'s.
        device: auto, cpu, cuda or cuda:N.
        embedder: an already loaded embedder of ``model`` on that device, to share instead of
            loading the weights a second time (a service that also names whole images has one).
        offline: never download the embedder's weights (``None``: as ``HF_HUB_OFFLINE`` says).
    """

    def __init__(
        self,
        *,
        detector: str,
        model: str,
        weights_hash: str | None = None,
        weights: str | None = None,
        detector_weights: str | None = None,
        min_score: float | None = _STAGE.min_score,
        min_size: int = _STAGE.min_size,
        pad: float = _STAGE.pad,
        detect_max_side: int = _STAGE.detect_max_side,
        device: str = "auto",
        max_pixels: int = _STAGE.max_pixels,
        embedder: Any = None,
        offline: bool | None = None,
    ):
        # the embed stage's rules, in its words (ValueError naming the option, the value and what it allows)
        EmbedConfig(min_score=min_score, min_size=min_size, pad=pad, detect_max_side=detect_max_side, max_pixels=max_pixels)
        self.device, why = pick_device(device)
        name, _ = resolve_name(detector)
        self.detector = create_detector(name, weights=detector_weights, min_size=min_size)
        if self.device.startswith("cuda") and self.detector.uses_gpu:
            self.detector = self.detector.to(self.device)
        self.embedder = embedder if embedder is not None else registry.create_embedder(model, weights=weights, offline=offline).to(self.device)
        got = self.embedder.info.get("weights_hash")
        if weights_hash and got != weights_hash:
            raise ValueError(f"the index was built with {model} weights {weights_hash}, the weights found here hash to {got}; pass the same weights")
        self.model = model
        self.weights_hash = got
        self.max_pixels = max_pixels
        self.opts = cropping.CropOptions(
            detector=self.detector.name,
            min_score=self.detector.default_min_score if min_score is None else float(min_score),
            min_size=min_size,
            pad=max(pad, float(getattr(self.embedder, "min_crop_pad", 0.0))),
            crop_size=int(self.embedder.preprocess.size),
            detect_max_side=detect_max_side,
        )
        logger.info("region encoder: %s + %s on %s (%s)", self.detector.name, model, self.device, why)

    def encode(self, data: bytes) -> Regions:
        """Boxes and vectors of one image's bytes; raises :class:`SkipItem` when it does not decode."""
        import torch

        img = np.array(open_image(data, max_pixels=self.max_pixels))
        h, w = img.shape[:2]
        counts: Counter = Counter()
        if min(h, w) < self.opts.min_size:
            return Regions(w, h, [], [], [], np.zeros((0, int(self.embedder.dim)), np.float32), {"too_small": 1})
        det = cropping.detect_scaled(self.detector, [img], self.opts.detect_max_side)[0]
        kept = cropping.clean_boxes(det, w, h, min_score=self.opts.min_score, min_size=self.opts.min_size, counts=counts)
        image = torch.from_numpy(img).to(self.device)
        px, inner = cropping.cut_squares(image, [k[0] for k in kept], size=self.opts.crop_size, pad=self.opts.pad)
        vecs = cropping.embed_crops(self.embedder, px, inner, batch_size=64)
        dropped = {k: int(v) for k, v in counts.items() if k in ("outside", "invalid", "low_score", "small")}
        return Regions(w, h, [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], vecs, dropped)


def recognize_regions(
    paths: Sequence[str | os.PathLike[str]],
    *,
    recognizer: Any,
    encoder: RegionEncoder,
    k: int | None = None,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Per image file: its boxes, each with a label (or None for unknown), score and top labels.

    ``recognizer`` is a :class:`corral.storage.recognizer.Recognizer` over an index of crops made with the
    encoder's model. A file that cannot be read or decoded gets an ``error``, never an exception.
    """
    recognizer.check_model(encoder.model, encoder.weights_hash)
    out: list[dict[str, Any]] = []
    for p in paths:
        entry: dict[str, Any] = {"input": str(p), "regions": []}
        try:
            regions = encoder.encode(Path(p).read_bytes())
        except SkipItem as e:
            entry["error"] = f"{e.reason}: {e.detail}" if e.detail else e.reason
            out.append(entry)
            continue
        except OSError as e:
            entry["error"] = f"unreadable: {e.strerror or e}"
            out.append(entry)
            continue
        entry.update(width=regions.width, height=regions.height, dropped=regions.dropped)
        decisions = recognizer.recognize(regions.vectors, k=k, threshold=threshold) if len(regions.bboxes) else []
        for box, score, cat, d in zip(regions.bboxes, regions.scores, regions.categories, decisions):
            r = {"bbox": box, "detector_score": round(score, 4), "label": d.label, "score": round(d.score, 6), "top": [[n, round(s, 6)] for n, s in d.top]}
            if cat:
                r["category"] = cat
            entry["regions"].append(r)
        out.append(entry)
    return out
