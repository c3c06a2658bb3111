"""Does a collection look like faces? Then a face pipeline would serve it better than an ImageNet model.

After ``corral embed`` with a general-purpose model, a sample of the items goes through OpenCV's
Haar face cascade (fast, a second for 32 images). When it finds a face in most of them, the command
says which face pipeline to try: ImageNet embedders group faces by pose and lighting rather than by
person (on ORL the default model's neighbours share the person 0.61 of the time, dlib's face model's
0.90, measured with ``pipeline/evaluate.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

#: The share of sampled images with a face above which the hint is given.
FACE_SHARE = 0.6
SAMPLE = 32


def face_share(workspace: Workspace, *, sample: int = SAMPLE, seed: int = 0) -> tuple[int, int] | None:
    """(images with a face, images tried) over a seeded sample of the workspace's whole images, or
    None when OpenCV's cascade is not installed or no image could be read."""
    from PIL import Image

    from corral.pipeline.detect import create_detector

    try:
        det: Any = create_detector("opencv:haar-face", min_size=24)
    except Exception as e:  # noqa: BLE001 - a missing optional extra only means no hint
        logger.debug("no face hint: %s", e)
        return None
    rows = [r for r in workspace.items().to_pylist() if r.get("status") == "ok" and not r.get("parent_id") and not str(r.get("uri", "")).startswith("s3://")]
    if not rows:
        return None
    rng = np.random.default_rng(seed)
    pick = [rows[k] for k in rng.choice(len(rows), size=min(sample, len(rows)), replace=False)]
    hits = tried = 0
    for r in pick:
        try:
            with Image.open(r["uri"]) as im:
                px = np.asarray(im.convert("RGB"))
        except OSError:
            continue
        tried += 1
        hits += int(len(det.detect([px])[0]) > 0)
    return (hits, tried) if tried else None


def face_hint(workspace: Workspace, model: str) -> str | None:
    """One line of advice when ``model`` is not a face model and most sampled images hold a face."""
    if model.startswith("dlib:"):
        return None
    got = face_share(workspace)
    if got is None or got[0] < FACE_SHARE * got[1]:
        return None
    hits, tried = got
    return (
        f"most of these images look like faces ({hits} of {tried} sampled have one); a face model separates people far better "
        f"than {model}: `--model dlib:face-resnet` for one face per image, `--detector face --model dlib:face-resnet` for group photos; "
        "`corral evaluate` compares the sets once a few people are named"
    )
