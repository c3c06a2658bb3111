"""Corral: label image collections by cluster instead of one image at a time.

Installed, the repository's folders are one package: ``corral.pipeline`` (embed, map, cluster),
``corral.storage`` (label store, workspace files, exports, S3, FAISS), ``corral.api`` (the FastAPI
app and the ``corral`` command line) and ``corral.viewer`` (the browser app's files). This module is
the package's root; it lives in ``api/_package`` because the repository keeps its four folders at the
top level and ``pyproject.toml`` maps them under ``corral`` at install time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corral")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
