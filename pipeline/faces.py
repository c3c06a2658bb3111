"""The ``dlib:face-resnet`` embedder: 128-d face identity vectors from dlib's face ResNet.

dlib's ResNet (about 29 conv layers, trained on ~3M faces of 7,485 people; CC0) maps an aligned
150 x 150 face chip to 128 numbers. Alignment uses dlib's 5-point landmark model: the landmarks
are found inside the face box and ``dlib.get_face_chip`` rotates and scales the face upright.
Both model files come with ``face-recognition-models`` (CC0), or from a folder passed as
``--weights`` holding ``dlib_face_recognition_resnet_model_v1.dat`` and
``shape_predictor_5_face_landmarks.dat``.

* With a detector (``corral embed --detector face --model dlib:face-resnet``), each crop comes
  with its box and the landmarks are found in that box (:meth:`DlibFaceEmbedder.embed_crops`).
* Without one, every image is taken to hold one face: dlib's HOG detector looks for it, and the
  whole frame is the face box when it finds none (:meth:`DlibFaceEmbedder.embed`).

Vectors are L2-normalised like every embedder's (the workspace contract); dlib's own rule "same
person below Euclidean distance 0.6" then reads roughly "cosine similarity above 0.93 - 0.94".
dlib runs where it was built to: the CPU for ``dlib-bin``, CUDA for a CUDA build.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from corral.pipeline import registry
from corral.pipeline.decode import Preprocess
from corral.pipeline.detect import dlib_model_file
from corral.pipeline.weights import WeightsNotFound, file_sha256

logger = logging.getLogger(__name__)

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"


def _model_files(weights: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """The ResNet and landmark files: from ``weights`` (a folder, or the ResNet file with the
    landmark file beside it), else from the ``face-recognition-models`` package."""
    if weights:
        p = Path(weights).expanduser()
        folder = p if p.is_dir() else p.parent
        net = p if p.is_file() else folder / RESNET_FILE
        marks = folder / LANDMARKS_FILE
        for f in (net, marks):
            if not f.is_file():
                raise WeightsNotFound(f"--weights {weights}: {f.name} not found there; pass a folder holding {RESNET_FILE} and {LANDMARKS_FILE}")
        return net, marks
    try:
        return dlib_model_file(RESNET_FILE), dlib_model_file(LANDMARKS_FILE)
    except WeightsNotFound as e:
        raise WeightsNotFound(f"weights for dlib:face-resnet not found offline: {e}; or pass --weights FOLDER with {RESNET_FILE} and {LANDMARKS_FILE}") from None


def available_offline() -> bool:
    """Whether ``dlib:face-resnet`` runs here with no download: dlib and both model files installed."""
    import importlib.util

    if importlib.util.find_spec("dlib") is None:
        return False
    try:
        _model_files(None)
    except WeightsNotFound:
        return False
    return True


class DlibFaceEmbedder:
    """dlib's face ResNet behind the embedder protocol (see the module docstring).

    Args:
        weights: a folder with both model files (default: the ``face-recognition-models`` package).
        jitters: dlib's ``num_jitters``: average over this many jittered copies (slower, steadier).
        chip_padding: context around the landmarks in the aligned chip (dlib's default 0.25).
    """

    name = "dlib:face-resnet"
    dim = 128
    #: Context around a detector's box the landmark model needs (the embed stage pads at least this).
    min_crop_pad = 0.3

    def __init__(self, *, weights: str | os.PathLike[str] | None = None, jitters: int = 0, chip_padding: float = 0.25):
        try:
            import dlib
        except ImportError:
            raise WeightsNotFound("dlib:face-resnet needs dlib: `pip install dlib-bin face-recognition-models`") from None
        if jitters < 0:
            raise ValueError(f"jitters={jitters}: must be >= 0")
        net, marks = _model_files(weights)
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(net))
        self._marks = dlib.shape_predictor(str(marks))
        self._finder: Any = None
        self.jitters = int(jitters)
        self.chip_padding = float(chip_padding)
        # Whole images are resized to 224 on their short side and centre-cropped square (no
        # normalisation: dlib takes uint8 RGB).
        self.preprocess = Preprocess(size=224, resize=224, interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.weights_hash = "sha256:" + file_sha256(net)
        self.info = {
            "family": "dlib",
            "model": "face-resnet",
            "weights": {"kind": "file" if weights else "package", "path": str(net), "landmarks": str(marks), "detail": "dlib face ResNet v1 + 5-point landmarks"},
            "weights_hash": self.weights_hash,
            "landmarks_hash": "sha256:" + file_sha256(marks),
            "dlib_version": dlib.__version__,
            "dlib_cuda": bool(getattr(dlib, "DLIB_USE_CUDA", False)),
            "jitters": self.jitters,
            "chip": {"size": 150, "padding": self.chip_padding},
        }

    def to(self, device: Any) -> "DlibFaceEmbedder":
        """dlib picks its own device when built (CUDA builds use the GPU); nothing moves."""
        return self

    def _chips(self, images: list[np.ndarray], boxes: list[tuple[float, ...]]) -> list[np.ndarray]:
        dlib = self._dlib
        chips = []
        for img, (x0, y0, x1, y1) in zip(images, boxes):
            rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
            shape = self._marks(img, rect)
            chips.append(dlib.get_face_chip(img, shape, size=150, padding=self.chip_padding))
        return chips

    def _vectors(self, chips: list[np.ndarray]) -> Any:
        import torch

        if not chips:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        desc = self._net.compute_face_descriptor(chips, self.jitters)
        v = torch.from_numpy(np.asarray([np.asarray(d) for d in desc], dtype=np.float32))
        return torch.nn.functional.normalize(v, dim=1)

    @staticmethod
    def _numpy(pixels: Any) -> list[np.ndarray]:
        arr = pixels.to("cpu").numpy() if hasattr(pixels, "to") else np.asarray(pixels)
        return [np.ascontiguousarray(a, dtype=np.uint8) for a in arr]

    def embed_crops(self, pixels: Any, boxes: Any) -> Any:
        """Crops (uint8 NHWC) with the face box inside each (``x0, y0, x1, y1``) -> unit vectors."""
        images = self._numpy(pixels)
        b = boxes.to("cpu").numpy() if hasattr(boxes, "to") else np.asarray(boxes)
        return self._vectors(self._chips(images, [tuple(map(float, r)) for r in b]))

    def embed(self, pixels: Any) -> Any:
        """Whole images, one face each (uint8 NHWC) -> unit vectors; see the module docstring."""
        if self._finder is None:
            self._finder = self._dlib.get_frontal_face_detector()
        images = self._numpy(pixels)
        boxes: list[tuple[float, ...]] = []
        for img in images:
            h, w = img.shape[:2]
            found = self._finder(img, 0)
            if len(found):
                r = max(found, key=lambda r: r.area())
                boxes.append((r.left(), r.top(), r.right() + 1, r.bottom() + 1))
            else:
                boxes.append((0.0, 0.0, float(w), float(h)))
        return self._vectors(self._chips(images, boxes))


def _create(model: str, *, weights: str | None = None, jitters: int = 0) -> DlibFaceEmbedder:
    return DlibFaceEmbedder(weights=weights, jitters=jitters)


registry.register(
    "dlib",
    _create,
    lambda: ["face-resnet"],
    doc="dlib:face-resnet, 128-d face identity vectors (dlib-bin + face-recognition-models, CC0); pair with --detector face",
)
