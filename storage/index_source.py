"""Where a recognition service gets its index from, and how it notices a newer one.

Three kinds of source, chosen by :func:`open_source` from one string:

- ``s3://bucket/prefix`` -- what ``corral publish`` wrote: ``LATEST`` names the newest complete
  version; only the ``index/`` files of that version are fetched (their sha256 checked against
  the version's manifest) into a local cache folder.
- a local folder with the same layout (``LATEST`` + ``versions/<v>/``), e.g. a synced copy.
- a workspace (or a pulled version): its ``index/index.json``; a new generation written by
  ``corral index build`` / ``update`` counts as a new version.

Each source answers ``latest()`` cheaply (one small read) and ``load(version)`` fully.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from corral.storage import s3 as s3util
from corral.storage.index import MANIFEST, LabelIndex, RecognitionIndexError, resolve_folder

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _check_version(v: str, where: str) -> str:
    v = v.strip()
    if not v or "/" in v or v.startswith(".") or len(v) > 200:
        raise RecognitionIndexError(f"LATEST at {where} holds {v[:60]!r}, which is not a version id")
    return v


class IndexSource:
    """Base class: ``latest()`` -> version id, ``load(version)`` -> :class:`LabelIndex`."""

    description = ""

    def latest(self) -> str:
        raise NotImplementedError

    def load(self, version: str) -> LabelIndex:
        raise NotImplementedError


class WorkspaceSource(IndexSource):
    """A workspace's own index; the version is its generation and update time."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        self.description = str(self.path)

    def latest(self) -> str:
        folder = resolve_folder(self.path)
        try:
            m = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise RecognitionIndexError(f"{folder / MANIFEST} is not readable ({e})") from None
        return f"g{int(m.get('generation', 0)):06d}-{m.get('updated_at', '')}"

    def load(self, version: str) -> LabelIndex:
        return LabelIndex.load(self.path)


class PublishedFolderSource(IndexSource):
    """A local folder laid out like a published prefix (``LATEST`` + ``versions/<v>/``)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        self.description = str(self.path)

    def latest(self) -> str:
        try:
            return _check_version((self.path / "LATEST").read_text(), str(self.path))
        except OSError as e:
            raise RecognitionIndexError(f"no LATEST in {self.path} ({e.strerror}); publish a version first") from None

    def load(self, version: str) -> LabelIndex:
        return LabelIndex.load(self.path / "versions" / _check_version(version, str(self.path)))


class S3Source(IndexSource):
    """A published S3 prefix; index files are cached under ``cache_dir/<version>/``."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, cache_dir: str | os.PathLike[str] | None = None, keep: int = 2):
        self.url = s3util.S3Url.parse(url)
        self.endpoint_url = endpoint_url
        self.description = str(self.url)
        self.cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "corral-index-cache" / hashlib.sha1(str(self.url).encode()).hexdigest()[:12]
        self.keep = keep
        self._client: Any = None

    def _key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.url.key, *parts) if p.strip("/"))

    def _get(self, key: str, missing: str) -> bytes:
        if self._client is None:
            self._client = s3util.client(self.endpoint_url)
        try:
            return self._client.get_object(Bucket=self.url.bucket, Key=key)["Body"].read()
        except Exception as e:  # botocore's errors: tell a missing key from an unreachable server
            code = getattr(e, "response", {}).get("Error", {}).get("Code") if isinstance(getattr(e, "response", None), dict) else None
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise RecognitionIndexError(missing) from None
            raise RecognitionIndexError(f"reading s3://{self.url.bucket}/{key} failed: {type(e).__name__}: {e}") from None

    def latest(self) -> str:
        body = self._get(self._key("LATEST"), f"no published version at {self.url} (no LATEST); run `corral publish` first")
        return _check_version(body.decode("utf-8", "replace"), str(self.url))

    def load(self, version: str) -> LabelIndex:
        version = _check_version(version, str(self.url))
        raw = self._get(self._key("versions", version, "manifest.json"), f"version {version} is not published at {self.url}")
        try:
            manifest = json.loads(raw)
        except ValueError as e:
            raise RecognitionIndexError(f"manifest of version {version} is not JSON ({e})") from None
        files = [f for f in manifest.get("files", []) if str(f.get("path", "")).startswith("index/")]
        if not any(f["path"] == f"index/{MANIFEST}" for f in files):
            raise RecognitionIndexError(f"version {version} at {self.url} has no recognition index; run `corral index build` before `corral publish`")
        dest = self.cache / version
        for f in files:
            rel = PurePosixPath(f["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise RecognitionIndexError(f"manifest of version {version} names an unsafe path {f['path']!r}")
            target = dest / rel
            if target.is_file() and target.stat().st_size == f.get("bytes") and _sha256(target) == f.get("sha256"):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            try:
                self._client.download_file(self.url.bucket, self._key("versions", version, f["path"]), str(tmp))
            except Exception as e:  # see _get
                tmp.unlink(missing_ok=True)
                raise RecognitionIndexError(f"downloading {f['path']} of version {version} failed: {type(e).__name__}: {e}") from None
            if _sha256(tmp) != f.get("sha256"):
                tmp.unlink(missing_ok=True)
                raise RecognitionIndexError(f"checksum mismatch for {f['path']} of version {version}; the published copy is damaged")
            os.replace(tmp, target)
        idx = LabelIndex.load(dest / "index")
        self._prune(version)
        return idx

    def _prune(self, current: str) -> None:
        """Keep the newest ``keep`` cached versions (by modification time)."""
        if not self.cache.is_dir():
            return
        olds = sorted((p for p in self.cache.iterdir() if p.is_dir() and p.name != current), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in olds[max(0, self.keep - 1) :]:
            shutil.rmtree(p, ignore_errors=True)


def open_source(spec: str | os.PathLike[str], *, endpoint_url: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> IndexSource:
    """The source a ``--from`` value names (see the module docstring)."""
    s = str(spec)
    if s.startswith("s3://"):
        return S3Source(s, endpoint_url=endpoint_url, cache_dir=cache_dir)
    p = Path(s).expanduser()
    if (p / "LATEST").is_file():
        return PublishedFolderSource(p)
    if p.is_dir():
        return WorkspaceSource(p)
    raise RecognitionIndexError(f"--from {s}: not an s3:// URL, a published folder (with LATEST) or a workspace folder")
