"""numba's on-disk cache for the map's compiled kernels (umap-learn, fast_hdbscan, pynndescent).

umap-learn and fast_hdbscan compile their numba kernels afresh in every process (about a minute
on two cores), because almost none of their ``@njit`` functions ask for ``cache=True``
(umap-learn 0.5: 1 of ~130, fast_hdbscan 0.3: none; pynndescent asks for most). numba can only
cache a function whose dispatcher was created with ``cache=True``, so :func:`enable` makes that
the default for every ``numba.njit`` / ``numba.jit`` decorated *after* it is called, and points
``NUMBA_CACHE_DIR`` at the user cache folder unless the user chose one. It must therefore run
before those libraries are imported; the ``corral`` command calls it before running ``map``,
``demo`` or ``serve`` (the commands whose work reaches them; ``python -m corral`` is the same entry).

A function numba cannot cache (one that closes over dynamic globals, say) is compiled as before
with a warning numba itself silences to debug level; nothing changes for it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The libraries whose kernels the map compiles; their modules must not be imported before enable().
LIBRARIES = ("umap", "fast_hdbscan", "pynndescent")

_ENABLED = False


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/corral/numba`` (``~/.cache/corral/numba``), ``%LOCALAPPDATA%`` on Windows."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "corral" / "numba"


def cache_dir() -> Path:
    """The folder numba caches into: ``NUMBA_CACHE_DIR`` when set, else :func:`default_cache_dir`."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    return Path(chosen) if chosen else default_cache_dir()


def _with_cache(decorator: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(decorator)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        return decorator(*args, **kwargs)

    wrapper.__corral_cached__ = True  # type: ignore[attr-defined]
    return wrapper


def enable() -> Path | None:
    """Cache compiled numba code on disk from now on; returns the cache folder (None if impossible).

    Sets ``NUMBA_CACHE_DIR`` (unless already set) before numba is imported, then makes
    ``cache=True`` the default of ``numba.njit`` and ``numba.jit``. If one of :data:`LIBRARIES` was
    imported already its kernels stay uncached (logged); calling this twice is harmless.
    """
    global _ENABLED
    if _ENABLED:
        return cache_dir()
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logger.warning("numba cache folder %s is not writable (%s); the map's kernels compile on every run", folder, e)
        return None
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    elif os.environ.get("NUMBA_CACHE_DIR") != str(folder):
        # numba reads its settings at import; it also re-reads them on reload_config().
        os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
        import numba.core.config

        numba.core.config.reload_config()
    early = [name for name in LIBRARIES if name in sys.modules]
    if early:
        logger.info("%s imported before the numba cache was enabled; their kernels compile this run", ", ".join(early))
    if "numba" in sys.modules:
        _patch(sys.modules["numba"])
    else:  # patch numba when something imports it, so a command that never compiles never loads it
        sys.meta_path.insert(0, _PatchOnImport())
    _ENABLED = True
    return folder


def _patch(numba: Any) -> None:
    if not getattr(numba.njit, "__corral_cached__", False):
        numba.njit = _with_cache(numba.njit)
        numba.jit = _with_cache(numba.jit)


class _PatchOnImport:
    """A one-shot import hook: numba's own loader runs, then :func:`_patch` on the fresh module."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "numba":
            return None
        import importlib.machinery

        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def is_warm(folder: Path | None = None) -> bool:
    """Whether the cache already holds compiled kernels of umap-learn and fast_hdbscan."""
    root = folder or cache_dir()
    if not root.is_dir():
        return False
    found = {lib: False for lib in ("umap", "fast_hdbscan")}
    for index in root.rglob("*.nbi"):
        text = str(index.relative_to(root))
        for lib in found:
            if lib in text:
                found[lib] = True
        if all(found.values()):
            return True
    return False
