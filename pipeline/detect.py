"""Detectors by name: images in, boxes with scores out.

A detector turns each image into boxes (``x0, y0, x1, y1`` in the image's pixels) with a score
in the detector's own units. Names follow the embedders' scheme, ``<library>:<model>``:

======================================  ====================================================
``opencv:haar-face``                    OpenCV's frontal-face Haar cascade (ships with
                                        ``opencv-python-headless`` 4.x); fast, many misses
``dlib:hog-face``                       dlib's HOG + linear SVM frontal-face detector (built
                                        into dlib); good on frontal faces, CPU
``dlib:cnn-face``                       dlib's MMOD CNN face detector
                                        (``face-recognition-models``); best, slow without CUDA
``torchvision:<model>``                 torchvision's COCO detectors (``fasterrcnn_resnet50_fpn``
                                        and friends), weights from a local file or the torch
                                        hub cache
``face``                                the best face detector usable here (see
                                        :func:`resolve_name`)
======================================  ====================================================

Heavy libraries are imported only when a detector of theirs is built. A detector whose package
or weights are missing fails with a message saying how to supply them. MTCNN is not offered:
the packages that ship its weights pin torch, numpy and Pillow versions far older than ours.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from corral.pipeline.weights import WeightsNotFound, file_sha256

logger = logging.getLogger(__name__)

#: Smallest face the dlib detectors find without upsampling (their scanning window), in pixels.
DLIB_WINDOW = 80
#: Most upsampling steps a dlib detector takes to reach ``min_size`` (each one is 4x the pixels).
DLIB_MAX_UPSAMPLE = 2


class DetectorUnavailable(ValueError):
    """A detector that cannot run on this machine (package missing); the message says what to install."""


@dataclass
class Detections:
    """Boxes found in one image."""

    boxes: np.ndarray  # float32 [k, 4]: x0, y0, x1, y1 in the image's pixels
    scores: np.ndarray  # float32 [k]: the detector's own confidence (higher is surer)
    categories: list[str] = field(default_factory=list)  # object class per box (object detectors), else empty

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Detector(Protocol):
    """What the detect stage needs from a detector."""

    name: str  # the registry name, e.g. "dlib:hog-face"
    kind: str  # "face" or "object"
    default_min_score: float  # boxes scoring below this are dropped unless --min-score says otherwise
    uses_gpu: bool  # True when it can run batched on a CUDA device given by ``to``
    info: dict[str, Any]  # recorded in the run config and the sidecar

    def to(self, device: Any) -> "Detector": ...

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """RGB uint8 ``H x W x 3`` arrays -> one :class:`Detections` per image."""
        ...


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    kind: str  # "face" | "object"
    doc: str
    factory: Callable[..., Detector]
    missing: Callable[[], str | None]  # why it cannot run here and how to fix it; None when it can
    needs_weights: bool = False  # weights come from --detector-weights or a cache (torchvision)


_SPECS: dict[str, DetectorSpec] = {}

#: Face detectors from best to worst; ``face`` picks the first usable one (see resolve_name).
FACE_PREFERENCE = ("dlib:cnn-face", "dlib:hog-face", "opencv:haar-face")


def register_detector(spec: DetectorSpec) -> None:
    """Add a detector name (other modules may add their own)."""
    _SPECS[spec.name] = spec


def _module_dir(module: str) -> Path | None:
    """A package's folder, found without importing it (face_recognition_models imports pkg_resources)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def dlib_model_file(name: str) -> Path:
    """A model file shipped by ``face-recognition-models`` (raises with the install hint)."""
    folder = _module_dir("face_recognition_models")
    path = folder / "models" / name if folder else None
    if path is None or not path.is_file():
        raise WeightsNotFound(f"{name} not found: `pip install face-recognition-models` ships it (CC0), offline once installed")
    return path


def _need_dlib() -> str | None:
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed: `pip install dlib-bin` (prebuilt, CPU) or build dlib with CUDA"
    return None


def _need_dlib_cnn() -> str | None:
    why = _need_dlib()
    if why:
        return why
    try:
        dlib_model_file("mmod_human_face_detector.dat")
    except WeightsNotFound as e:
        return str(e)
    return None


def _need_haar() -> str | None:
    folder = _module_dir("cv2")
    if folder is None:
        return "OpenCV is not installed: `pip install 'opencv-python-headless<5'` (its 4.x wheels ship the Haar cascades)"
    if not (folder / "data" / "haarcascade_frontalface_default.xml").is_file():
        return "this OpenCV ships no Haar cascades (OpenCV 5 dropped them): `pip install 'opencv-python-headless<5'`"
    return None


def _need_torchvision() -> str | None:
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed: `pip install torchvision`"
    return None


# ----------------------------------------------------------------------------------------------
# Names


def _load_builtin() -> None:
    if "dlib:hog-face" in _SPECS:
        return
    register_detector(DetectorSpec("opencv:haar-face", "face", "OpenCV's frontal-face Haar cascade (opencv-python-headless 4.x); fast, misses more", lambda **o: HaarFaceDetector(**o), _need_haar))
    register_detector(DetectorSpec("dlib:hog-face", "face", "dlib's HOG frontal-face detector (dlib-bin); good on frontal faces, CPU", lambda **o: DlibHogDetector(**o), _need_dlib))
    register_detector(DetectorSpec("dlib:cnn-face", "face", "dlib's MMOD CNN face detector (face-recognition-models); best, slow without CUDA", lambda **o: DlibCnnDetector(**o), _need_dlib_cnn))
    for arch in TORCHVISION_MODELS:
        register_detector(
            DetectorSpec(
                f"torchvision:{arch}",
                "object",
                f"torchvision {arch} (COCO classes); weights from --detector-weights or the torch hub cache",
                _torchvision_factory(arch),
                _need_torchvision,
                needs_weights=True,
            )
        )


#: torchvision detection models offered by name (all COCO-trained in torchvision's model zoo).
TORCHVISION_MODELS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
)


def specs() -> dict[str, DetectorSpec]:
    """Every registered detector by name."""
    _load_builtin()
    return dict(_SPECS)


def dlib_has_cuda() -> bool:
    """Whether the installed dlib was built with CUDA (``dlib-bin`` is not)."""
    if _need_dlib():
        return False
    import dlib

    return bool(getattr(dlib, "DLIB_USE_CUDA", False))


def resolve_name(name: str) -> tuple[str, str]:
    """``(canonical name, why)``; ``face`` becomes the best face detector usable here.

    The MMOD CNN finds the most faces, but without CUDA it takes seconds per photo, so ``face``
    means ``dlib:cnn-face`` only when dlib was built with CUDA, then ``dlib:hog-face``, then
    ``opencv:haar-face``. Unknown names fail with the close matches.
    """
    known = specs()
    if name == "face":
        for cand in FACE_PREFERENCE:
            if known[cand].missing() is None:
                if cand == "dlib:cnn-face" and not dlib_has_cuda():
                    continue
                why = "face: dlib built with CUDA" if cand == "dlib:cnn-face" else f"face: best usable here ({cand}; dlib:cnn-face needs a CUDA build of dlib to be fast)"
                return cand, why
        raise DetectorUnavailable("detector 'face': no face detector is installed; `pip install dlib-bin face-recognition-models` (or 'opencv-python-headless<5')")
    if name not in known:
        close = difflib.get_close_matches(name, [*known, "face"], n=4, cutoff=0.5)
        raise ValueError(f"detector {name!r} is not known" + (f"; close matches: {', '.join(close)}" if close else "") + "; `corral detectors` lists them all")
    return name, "requested"


def create_detector(name: str, *, weights: str | None = None, min_size: int = 40, **options: Any) -> Detector:
    """Build the detector called ``name`` (on the CPU; move it with ``.to(device)``).

    Args:
        name: a registry name or ``face``.
        weights: a weight file for detectors that need one (torchvision); ignored by the others.
        min_size: the smallest box side wanted, in pixels; detectors that scan at a fixed window
            size upsample the image to reach it.
    """
    canonical, _ = resolve_name(name)
    spec = specs()[canonical]
    why = spec.missing()
    if why:
        raise DetectorUnavailable(f"detector {canonical}: {why}")
    if spec.needs_weights:
        options["weights"] = weights
    return spec.factory(min_size=min_size, **options)


def describe() -> list[dict[str, Any]]:
    """One row per detector: name, kind, whether it runs here and, if not, how to fix that."""
    rows = []
    for name, spec in sorted(specs().items()):
        why = spec.missing()
        status = "ready" if why is None else "unavailable"
        if why is None and spec.needs_weights:
            found = _torchvision_cached_weights(name.split(":", 1)[1])
            status = "ready" if found else "needs weights"
            why = None if found else "pass --detector-weights FILE (or put torchvision's file in the torch hub cache)"
        rows.append({"name": name, "kind": spec.kind, "status": status, "how_to_fix": why or "", "doc": spec.doc})
    return rows


# ----------------------------------------------------------------------------------------------
# Built-in detectors


def _upsample_for(min_size: int) -> int:
    """dlib upsampling steps needed so faces of ``min_size`` pixels fill its 80 px window."""
    steps = 0
    while steps < DLIB_MAX_UPSAMPLE and min_size * (2**steps) < DLIB_WINDOW:
        steps += 1
    return steps


def _rects_to_boxes(rects: Sequence[Any]) -> np.ndarray:
    if not len(rects):
        return np.zeros((0, 4), np.float32)
    # dlib rectangles are inclusive: right/bottom name the last pixel row/column inside.
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)


class DlibHogDetector:
    """dlib's HOG frontal-face detector; the score is the SVM margin (0 = its default threshold)."""

    name = "dlib:hog-face"
    kind = "face"
    default_min_score = 0.0
    uses_gpu = False

    def __init__(self, *, min_size: int = 40, upsample: int | None = None):
        import dlib

        self.upsample = _upsample_for(min_size) if upsample is None else int(upsample)
        self._det = dlib.get_frontal_face_detector()
        self.info = {"name": self.name, "dlib_version": dlib.__version__, "upsample": self.upsample, "score": "SVM margin"}

    def to(self, device: Any) -> "DlibHogDetector":
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for img in images:
            # A threshold just below the default lets --min-score go under 0 for more recall.
            rects, scores, _ = self._det.run(np.ascontiguousarray(img), self.upsample, -0.5)
            out.append(Detections(_rects_to_boxes(rects), np.asarray(scores, np.float32).reshape(-1)))
        return out


class DlibCnnDetector:
    """dlib's MMOD CNN face detector; batched (same-size images go through together)."""

    name = "dlib:cnn-face"
    kind = "face"
    default_min_score = 0.0
    uses_gpu = True  # when dlib was built with CUDA; otherwise it runs on the CPU regardless

    def __init__(self, *, min_size: int = 40, upsample: int | None = None, batch_size: int = 32):
        import dlib

        path = dlib_model_file("mmod_human_face_detector.dat")
        self.upsample = _upsample_for(min_size) if upsample is None else int(upsample)
        self.batch_size = batch_size
        self._det = dlib.cnn_face_detection_model_v1(str(path))
        self.uses_gpu = bool(getattr(dlib, "DLIB_USE_CUDA", False))
        self.info = {
            "name": self.name,
            "dlib_version": dlib.__version__,
            "dlib_cuda": self.uses_gpu,
            "upsample": self.upsample,
            "weights": str(path),
            "weights_hash": "sha256:" + file_sha256(path),
            "score": "MMOD confidence",
        }

    def to(self, device: Any) -> "DlibCnnDetector":
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for idx in by_shape.values():
            batch = [np.ascontiguousarray(images[i]) for i in idx]
            found = self._det(batch, self.upsample, batch_size=self.batch_size) if len(batch) > 1 else [self._det(batch[0], self.upsample)]
            for i, dets in zip(idx, found):
                out[i] = Detections(_rects_to_boxes([d.rect for d in dets]), np.array([d.confidence for d in dets], np.float32).reshape(-1))
        return [d if d is not None else Detections.empty() for d in out]


class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade; the score is the last stage's level weight."""

    name = "opencv:haar-face"
    kind = "face"
    default_min_score = 0.0
    uses_gpu = False

    def __init__(self, *, min_size: int = 40, scale_factor: float = 1.1, min_neighbors: int = 5, cascade: str = "haarcascade_frontalface_default.xml"):
        import cv2

        path = Path(cv2.data.haarcascades) / cascade  # type: ignore[attr-defined]  # opencv's stubs omit the cv2.data submodule
        self._clf = cv2.CascadeClassifier(str(path))
        if self._clf.empty():
            raise WeightsNotFound(f"OpenCV could not load the cascade {path}; reinstall 'opencv-python-headless<5'")
        self.min_size = max(8, int(min_size))
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.info = {"name": self.name, "opencv_version": cv2.__version__, "cascade": cascade, "scale_factor": scale_factor, "min_neighbors": min_neighbors, "score": "level weight"}

    def to(self, device: Any) -> "HaarFaceDetector":
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import cv2

        out = []
        for img in images:
            gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
            gray = cv2.equalizeHist(gray)
            rects, _, weights = self._clf.detectMultiScale3(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size, self.min_size), outputRejectLevels=True)
            if len(rects) == 0:
                out.append(Detections.empty())
                continue
            r = np.asarray(rects, np.float32).reshape(-1, 4)
            boxes = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)
            out.append(Detections(boxes, np.asarray(weights, np.float32).reshape(-1)))
        return out


# ----------------------------------------------------------------------------------------------
# torchvision


def _torchvision_weights_enum(arch: str) -> Any:
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT


def _torchvision_cached_weights(arch: str) -> Path | None:
    """torchvision's own weight file for ``arch`` when it is in the torch hub cache."""
    if _need_torchvision():
        return None
    import torch

    try:
        url = _torchvision_weights_enum(arch).url
    except Exception:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def _torchvision_factory(arch: str) -> Callable[..., Detector]:
    def make(*, weights: str | None = None, min_size: int = 40) -> Detector:
        del min_size  # a detector network finds boxes of any size; the stage drops the small ones
        return TorchvisionDetector(arch, weights=weights)

    return make


class TorchvisionDetector:
    """A torchvision COCO detector; batched on the stage's device (bf16-free: fp32 for exact boxes)."""

    kind = "object"
    default_min_score = 0.5
    uses_gpu = True

    def __init__(self, arch: str, *, weights: str | None = None):
        import torch
        import torchvision

        self.name = f"torchvision:{arch}"
        enum = _torchvision_weights_enum(arch)
        self.categories = list(enum.meta.get("categories") or [])
        path = Path(weights).expanduser() if weights else _torchvision_cached_weights(arch)
        if path is None:
            fname = enum.url.rsplit("/", 1)[-1]
            raise WeightsNotFound(
                f"weights for detector {self.name} not found offline: pass --detector-weights FILE (torchvision's {fname}), "
                f"or put that file in {Path(torch.hub.get_dir()) / 'checkpoints'} (where torchvision saves it when online, "
                f"e.g. `python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='DEFAULT')\"` on a machine with internet)"
            )
        if not path.is_file():
            raise WeightsNotFound(f"--detector-weights {weights}: no such file")
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=len(self.categories) or 91)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsNotFound(f"{path}: not a torch weight file ({type(e).__name__}: {e})"[:300]) from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise WeightsNotFound(f"{path} does not hold weights for {arch}: {str(e).splitlines()[0][:200]}") from None
        self.model = model.eval()
        self.device = torch.device("cpu")
        self.info = {"name": self.name, "weights": str(path), "weights_hash": "sha256:" + file_sha256(path), "torchvision_version": torchvision.__version__, "score": "class probability"}

    def to(self, device: Any) -> "TorchvisionDetector":
        import torch

        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        if not len(images):
            return []
        tensors = [torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1).float().div_(255.0) for img in images]
        with torch.inference_mode():
            found = self.model(tensors)
        out = []
        for f in found:
            labels = f["labels"].to("cpu").numpy()
            names = [self.categories[k] if 0 <= k < len(self.categories) else str(int(k)) for k in labels]
            out.append(Detections(f["boxes"].to("cpu").numpy().astype(np.float32).reshape(-1, 4), f["scores"].to("cpu").numpy().astype(np.float32), names))
        return out
