"""Sources of images: a folder, a manifest, or an S3 prefix.

Listing is cheap and happens up front (names and sizes only); bytes are read later, inside the
decode workers, through :func:`read_bytes`, which works for local paths and ``s3://`` URIs alike.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.storage import s3 as s3util
from corral.storage.tables import read_table_rows

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")


class SourceError(ValueError):
    """A source that cannot be listed at all (missing folder, bad manifest, S3 errors)."""


@dataclass(frozen=True)
class SourceItem:
    uri: str  # local absolute path, or s3://bucket/key
    size: int = -1  # bytes, -1 when unknown
    label: str = ""  # a label carried by the manifest
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def list_source(source: str | os.PathLike[str], *, endpoint_url: str | None = None) -> list[SourceItem]:
    """Every item a source names, sorted by URI so shard boundaries are repeatable."""
    src = str(source)
    if src.startswith("s3://"):
        return _list_s3(src, endpoint_url)
    path = Path(src).expanduser()
    if path.is_dir():
        return _list_folder(path)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return _list_manifest(path)
    if path.is_file():
        raise SourceError(f"{src}: a single file is not a source; pass its folder, or a manifest (.csv, .jsonl, .parquet)")
    raise SourceError(f"{src}: no such folder or manifest")


def _list_folder(root: Path) -> list[SourceItem]:
    items: list[SourceItem] = []
    root = root.resolve()
    escaped = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_symlink():
                target = p.resolve()
                if root not in target.parents:
                    escaped += 1
                    continue  # a link out of the folder: whoever can write here could point it anywhere
                if target.exists():
                    p = target  # a link inside the folder: recorded (and served) as the file it names
            try:
                size = p.stat().st_size
            except OSError:
                size = -1  # a dangling link or a vanished file: the worker records why
            items.append(SourceItem(str(p), size))
    if escaped:
        logger.warning("%s: left out %d symbolic link(s) pointing outside the folder", root, escaped)
    items.sort(key=lambda it: it.uri)
    return items


def _read_manifest_rows(path: Path) -> list[dict[str, Any]]:
    return read_table_rows(path, error=SourceError)


def _list_manifest(path: Path) -> list[SourceItem]:
    rows = _read_manifest_rows(path)
    if not rows:
        return []
    cols = set(rows[0])
    key = "uri" if "uri" in cols else ("path" if "path" in cols else None)
    if key is None:
        raise SourceError(f"{path}: a manifest needs a 'uri' column (or 'path'); it has {', '.join(sorted(cols))}")
    base = path.parent.resolve()
    items = []
    for row in rows:
        raw = str(row.get(key) or "").strip()
        if not raw:
            continue
        uri = raw if raw.startswith("s3://") else str((base / raw).resolve() if not os.path.isabs(raw) else Path(raw).resolve())
        label = row.get("label")
        meta = {k: v for k, v in row.items() if k not in (key, "label") and v not in (None, "")}
        items.append(SourceItem(uri, -1, "" if label is None else str(label), meta))
    items.sort(key=lambda it: it.uri)
    return items


def _list_s3(url: str, endpoint_url: str | None) -> list[SourceItem]:
    u = s3util.S3Url.parse(url)
    try:
        objs = s3util.list_objects(_s3_client(endpoint_url), u)
    except Exception as e:
        raise SourceError(f"{url}: cannot list ({type(e).__name__}: {e})") from None
    return [SourceItem(f"s3://{u.bucket}/{key}", size) for key, size in objs if not key.rsplit("/", 1)[-1].startswith(".")]


@functools.lru_cache(maxsize=4)
def _s3_client(endpoint_url: str | None):
    # One client per process (and per endpoint): boto3 clients are not shared across forks.
    return s3util.client(endpoint_url)


def _read_regular(path: str, max_bytes: int) -> bytes:
    """A local file's bytes, read only when it is a regular file: a FIFO would block the reader
    forever and a device such as /dev/zero never ends, so both are refused (``OSError``) before a byte
    is read. Opened non-blocking so that opening a FIFO does not wait for a writer; at most the
    file's size (and ``max_bytes``) is read."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file"
            raise OSError(f"not a regular file ({kind})")
        return fh.read(min(st.st_size, max_bytes) + 1)


def read_bytes(uri: str, *, endpoint_url: str | None = None, max_bytes: int = 1 << 30) -> bytes:
    """The bytes behind a URI. Raises ``OSError`` when they cannot be read."""
    if uri.startswith("s3://"):
        u = s3util.S3Url.parse(uri)
        try:
            body = _s3_client(endpoint_url).get_object(Bucket=u.bucket, Key=u.key)["Body"]
            data = body.read(max_bytes + 1)
        except Exception as e:
            raise OSError(f"S3 read failed: {type(e).__name__}: {e}") from None
    else:
        data = _read_regular(uri, max_bytes)
    if len(data) > max_bytes:
        raise OSError(f"file is larger than {max_bytes} bytes")
    return data
