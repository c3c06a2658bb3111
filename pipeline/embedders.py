"""Built-in embedder families. Imported lazily by :mod:`corral.pipeline.registry`."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.pipeline import bnfold, registry, weights
from corral.pipeline.decode import Preprocess

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _timm_names() -> list[str]:
    import timm

    names = set(timm.list_models())
    names.update(timm.list_models(pretrained=True))
    return sorted(names)


def _timm_is_known(name: str) -> bool:
    import timm

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        return False
    return not tag or name in timm.list_models(arch + ".*", pretrained=True) or name in _timm_names()


class TimmEmbedder:
    """Any timm model without its classifier, with timm's own preprocessing.

    ``embed`` takes uint8 NHWC pixels on the model's device, normalises them there, runs the
    model (bf16 autocast and channels_last on CUDA) and returns L2-normalised float32 vectors.
    """

    def __init__(
        self,
        model_name: str,
        *,
        weights_path: str | os.PathLike[str] | None = None,
        allow_random: bool = False,
        compile: bool = False,
        offline: bool | None = None,
    ):
        import timm
        import torch

        self.name = f"timm:{model_name}"
        arch, _, tag = model_name.partition(".")
        model = timm.create_model(model_name if tag else arch, pretrained=False, num_classes=0)
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.source = weights.resolve(
            arch,
            weights=weights_path,
            hf_hub_id=cfg.get("hf_hub_id"),
            hf_hub_filename=cfg.get("hf_hub_filename"),
            allow_random=allow_random,
            offline=offline,
        )
        if self.source.kind in ("file", "package"):
            weights.load_into(model, weights.load_state_dict(self.source.path), source=self.source.detail)
        elif self.source.kind in ("hf-cache", "hub"):
            # timm loads its own hub files (key filters, head removal) from the file found or fetched,
            # so it never reaches for the network itself.
            model = timm.create_model(model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(self.source.path)})
        self.weights_hash = "sha256:" + weights.file_sha256(self.source.path) if self.source.path else "random"
        model.eval()
        data_cfg = timm.data.resolve_model_data_config(model)
        _, h, w = data_cfg["input_size"]
        # Batch norms folded into their convolutions: the same vectors to float rounding, and on a
        # CPU 1.5x the images per second for EfficientNet-Lite0 and MobileNetV2, 1.3x for ResNet-50.
        probe = torch.randn(2, 3, int(h), int(w), generator=torch.Generator().manual_seed(0))
        model, folded = bnfold.fold_batchnorms(model, probe)
        size = int(min(h, w))
        crop_pct = float(data_cfg.get("crop_pct") or 0.875)
        self.preprocess = Preprocess(
            size=size,
            resize=int(round(size / crop_pct)),
            interpolation=str(data_cfg.get("interpolation") or "bicubic"),
            mean=tuple(float(x) for x in data_cfg["mean"]),
            std=tuple(float(x) for x in data_cfg["std"]),
        )
        self.model = model
        self.dim = int(model.num_features)  # type: ignore[arg-type]  # torch types Module.__getattr__ as Tensor | Module; timm sets num_features as an int
        self.device = torch.device("cpu")
        self.compile = compile
        self._compiled: Callable[..., Any] | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self.info = {
            "family": "timm",
            "timm_model": model_name,
            "weights": self.source.as_dict(),
            "weights_hash": self.weights_hash,
            "batchnorms_folded": folded,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
        }

    def to(self, device: Any) -> "TimmEmbedder":
        import torch

        self.device = torch.device(device)
        self.model = self.model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks the (device, memory_format=) overload that Module.to accepts
        mean = torch.tensor(self.preprocess.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.preprocess.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._mean, self._std = mean, std
        if self.compile and self.device.type == "cuda":
            self._compiled = torch.compile(self.model, mode="max-autotune-no-cudagraphs", dynamic=False)
        return self

    def normalise(self, pixels):
        """uint8 NHWC -> float NCHW (channels_last strides) normalised with the model's mean/std."""
        import torch

        if self._mean is None:
            self.to(self.device)
        x = pixels.permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        """Normalised float NCHW -> L2-normalised float32 vectors (the model-only path)."""
        import torch

        model = self._compiled or self.model
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = model(x)
            else:
                out = model(x)
            out = out.float()
            return torch.nn.functional.normalize(out, dim=1)

    def embed(self, pixels):
        import torch

        with torch.inference_mode():
            return self.forward(self.normalise(pixels))


def _create_timm(model_name: str, *, weights: str | None = None, allow_random: bool = False, compile: bool = False, offline: bool | None = None) -> TimmEmbedder:
    return TimmEmbedder(model_name, weights_path=weights, allow_random=allow_random, compile=compile, offline=offline)


registry.register(
    "timm",
    _create_timm,
    _timm_names,
    doc="any timm model, e.g. timm:tf_efficientnet_lite0 (weights offline), timm:vit_small_patch14_dinov2.lvd142m (weights downloaded once)",
    is_known=_timm_is_known,
)


class PixelEmbedder:
    """Raw pixels as the vector: greyscale, resized to ``side x side``, flattened, L2-normalised.

    The baseline every learned embedder is compared against, and the right choice for small
    greyscale sets such as handwritten digits. ``pixels:28`` gives 784-d vectors.
    """

    def __init__(self, side: int):
        import torch

        if side < 2 or side > 256:
            raise ValueError(f"pixels:{side}: side must be between 2 and 256")
        self.name = f"pixels:{side}"
        self.dim = side * side
        self.preprocess = Preprocess(size=side, resize=side, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.device = torch.device("cpu")
        self.weights_hash = "none"
        self.info = {"family": "pixels", "side": side, "weights_hash": "none", "torch_version": torch.__version__}

    def to(self, device: Any) -> "PixelEmbedder":
        import torch

        self.device = torch.device(device)
        return self

    def embed(self, pixels):
        import torch

        with torch.inference_mode():
            grey = pixels.float().mean(dim=3).flatten(1) / 255.0
            return torch.nn.functional.normalize(grey, dim=1)


def _create_pixels(side: str) -> PixelEmbedder:
    return PixelEmbedder(int(side))


registry.register(
    "pixels",
    _create_pixels,
    lambda: ["28", "32", "64"],
    doc="raw greyscale pixels, e.g. pixels:28 (784-d); the baseline for small greyscale images",
    is_known=lambda s: s.isdigit() and 2 <= int(s) <= 256,
)

__all__ = ["PixelEmbedder", "TimmEmbedder", "Path"]
