"""Embedders by name.

A name is ``<family>:<model>``: ``timm:tf_efficientnet_lite0``, ``timm:resnet50.a1_in1k``,
``dlib:face-resnet``. Each family is a factory registered here; heavy libraries are imported
only when a name of that family is chosen. Unknown names fail with the close matches.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.pipeline.decode import Preprocess

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "timm:tf_efficientnet_lite0"


class UnknownName(ValueError):
    """A registry name that does not exist."""


class Embedder(Protocol):
    """What the embed stage needs from a model."""

    name: str  # the registry name, e.g. "timm:tf_efficientnet_lite0"
    dim: int
    preprocess: Preprocess
    info: dict[str, Any]  # recorded in the sidecar: weights source and hash, versions, ...

    def to(self, device: Any) -> "Embedder": ...

    def embed(self, pixels: Any) -> Any:
        """uint8 NHWC tensor on the model's device -> L2-normalised float32 [N, dim] tensor."""
        ...


@dataclass
class Family:
    prefix: str
    factory: Callable[..., Embedder]
    names: Callable[[], list[str]]  # known names, for suggestions
    doc: str = ""
    is_known: Callable[[str], bool] | None = field(default=None)


_FAMILIES: dict[str, Family] = {}


def register(prefix: str, factory: Callable[..., Embedder], names: Callable[[], list[str]], doc: str = "", is_known: Callable[[str], bool] | None = None) -> None:
    _FAMILIES[prefix] = Family(prefix, factory, names, doc, is_known)


def families() -> dict[str, Family]:
    _load_builtin()
    return dict(_FAMILIES)


def _load_builtin() -> None:
    if "timm" not in _FAMILIES:
        from corral.pipeline import embedders  # noqa: F401  (registers the built-in families)
    if "dlib" not in _FAMILIES:
        from corral.pipeline import faces  # noqa: F401  (dlib:face-resnet; imports dlib only when built)


def split_name(name: str) -> tuple[str, str]:
    _load_builtin()
    if ":" not in name:
        # A bare timm name is the common case; accept it.
        return "timm", name
    prefix, _, rest = name.partition(":")
    if prefix not in _FAMILIES:
        close = difflib.get_close_matches(prefix, list(_FAMILIES), n=3)
        raise UnknownName(f"unknown embedder family {prefix!r} in {name!r}; known: {', '.join(sorted(_FAMILIES))}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return prefix, rest


def check_name(name: str) -> str:
    """Validate a name without loading anything heavy; returns the canonical ``family:model``."""
    prefix, rest = split_name(name)
    fam = _FAMILIES[prefix]
    known = fam.is_known(rest) if fam.is_known else rest in fam.names()
    if not known:
        close = difflib.get_close_matches(rest, fam.names(), n=5, cutoff=0.6)
        raise UnknownName(f"unknown {prefix} model {rest!r}" + (f"; close matches: {', '.join(prefix + ':' + c for c in close)}" if close else ""))
    return f"{prefix}:{rest}"


#: Options the embed stage hands every family; a family without a use for one is not given it.
SHARED_OPTIONS = frozenset({"weights", "allow_random", "compile", "offline"})


def create_embedder(name: str, **options: Any) -> Embedder:
    """Build the embedder called ``name`` (on the CPU; move it with ``.to(device)``).

    ``options`` are the family factory's keyword arguments plus :data:`SHARED_OPTIONS`; any other
    name (a misspelt option) raises ValueError instead of vanishing.
    """
    canonical = check_name(name)
    prefix, rest = canonical.split(":", 1)
    factory = _FAMILIES[prefix].factory
    params = inspect.signature(factory).parameters
    takes = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return factory(rest, **options)
    unknown = sorted(set(options) - takes - SHARED_OPTIONS)
    if unknown:
        raise ValueError(f"embedder {canonical}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(sorted(takes - {'model_name', 'model', 'side'})) or 'none'}")
    return factory(rest, **{k: v for k, v in options.items() if k in takes})
