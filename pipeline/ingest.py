"""Sources of images: a folder, a manifest, or an S3 prefix.

Listing is cheap (names and sizes only) and streams: :func:`iter_source` yields items as the
folder walk, the manifest reader or the S3 pages give them, and :func:`stream_source` puts them in
URI order without holding them all (:mod:`corral.pipeline.listing`). Bytes are read later, inside
the decode workers, through :func:`read_bytes`, which works for local paths and ``s3://`` URIs alike.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.storage import s3 as s3util
from corral.storage.tables import iter_table_rows

if TYPE_CHECKING:
    from corral.pipeline.listing import Listing

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
    return sorted(iter_source(source, endpoint_url=endpoint_url), key=lambda it: it.uri)


def stream_source(source: str | os.PathLike[str], *, endpoint_url: str | None = None) -> "Listing":
    """The items of :func:`list_source` (same order) as a :class:`~corral.pipeline.listing.Listing`:
    sorted runs spilled to disk past a chunk, so memory stays flat however many items there are."""
    from corral.pipeline.listing import Listing

    return Listing(iter_source(source, endpoint_url=endpoint_url))


def iter_source(source: str | os.PathLike[str], *, endpoint_url: str | None = None) -> Iterator[SourceItem]:
    """The items a source names, one at a time, in no promised order. A source that cannot be
    listed at all raises :class:`SourceError` here, before the first item."""
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


def _list_folder(root: Path) -> Iterator[SourceItem]:
    root = root.resolve()
    escaped = listed = 0
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
            listed += 1
            yield SourceItem(str(p), size)
    if escaped and not listed:
        # every file was such a link (a class-per-folder view made with ln -s): say so, not "empty"
        raise SourceError(
            f"{root}: all {escaped} file(s) are symbolic links pointing outside the folder, and links out of a collection are not followed"
            " (whoever can write there could point one anywhere); copy the files in, or list them in a manifest (.csv with a 'path' column)"
        )
    if escaped:
        logger.warning("%s: left out %d symbolic link(s) pointing outside the folder", root, escaped)


def _list_manifest(path: Path) -> Iterator[SourceItem]:
    rows = iter_table_rows(path, error=SourceError)
    first = next(rows, None)
    if first is None:
        return iter(())
    cols = set(first)
    key = "uri" if "uri" in cols else ("path" if "path" in cols else None)
    if key is None:
        raise SourceError(f"{path}: a manifest needs a 'uri' column (or 'path'); it has {', '.join(sorted(cols))}")
    return _manifest_items(path.parent.resolve(), key, itertools.chain([first], rows))


def _manifest_items(base: Path, key: str, rows: Iterator[dict[str, Any]]) -> Iterator[SourceItem]:
    for row in rows:
        raw = str(row.get(key) or "").strip()
        if not raw:
            continue
        uri = raw if raw.startswith("s3://") else str((base / raw).resolve() if not os.path.isabs(raw) else Path(raw).resolve())
        label = row.get("label")
        meta = {k: v for k, v in row.items() if k not in (key, "label") and v not in (None, "")}
        yield SourceItem(uri, -1, "" if label is None else str(label), meta)


def _list_s3(url: str, endpoint_url: str | None) -> Iterator[SourceItem]:
    u = s3util.S3Url.parse(url)
    try:
        pages = s3util.iter_objects(_s3_client(endpoint_url), u)
        first = next(pages, None)  # the first page, so an unreachable bucket fails here
    except Exception as e:
        raise SourceError(f"{url}: cannot list ({type(e).__name__}: {e})") from None
    return _s3_items(url, u, first, pages)


def _s3_items(url: str, u: "s3util.S3Url", first: tuple[str, int] | None, pages: Iterator[tuple[str, int]]) -> Iterator[SourceItem]:
    try:
        for key, size in itertools.chain([first] if first else [], pages):
            if not key.rsplit("/", 1)[-1].startswith("."):
                yield SourceItem(f"s3://{u.bucket}/{key}", size)
    except Exception as e:
        raise SourceError(f"{url}: cannot list ({type(e).__name__}: {e})") from None


_client_lock = threading.Lock()


def _s3_client(endpoint_url: str | None):
    # One client per process (and per endpoint): boto3 clients are not shared across forks. A
    # client serves many threads (the CPU run's decode threads), but two threads making the first
    # one at once can break boto3's shared default session: made under a lock.
    with _client_lock:
        return _new_s3_client(endpoint_url)


@functools.lru_cache(maxsize=4)
def _new_s3_client(endpoint_url: str | None):
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
