"""A small binary container for typed arrays, read in the browser without a library.

Layout::

    b"CRL1"  uint32 little-endian N  N bytes of UTF-8 JSON header (space-padded)  column data

The header lists ``columns``: ``{"name", "dtype", "length", "offset"}`` with ``offset`` counted from
the first byte after the header and aligned to 8, so the browser can view each column in place
(``new Uint16Array(buffer, start + offset, length)``). Everything else in the header is free-form.
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

import numpy as np

MAGIC = b"CRL1"
_DTYPES = {"uint8", "uint16", "uint32", "int32", "float32"}


def pack(header: dict[str, Any], columns: list[tuple[str, np.ndarray]]) -> bytes:
    """Serialise ``columns`` (1-D little-endian arrays) with ``header`` into one buffer."""
    cols = []
    offset = 0
    chunks: list[bytes] = []
    for name, arr in columns:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _DTYPES or arr.ndim != 1:
            raise ValueError(f"column {name!r}: dtype {arr.dtype} ndim {arr.ndim}; expected 1-D {sorted(_DTYPES)}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        cols.append({"name": name, "dtype": arr.dtype.name, "length": int(arr.shape[0]), "offset": offset})
        pad = (-len(data)) % 8
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = json.dumps({**header, "columns": cols}, separators=(",", ":")).encode()
    head += b" " * ((-(8 + len(head))) % 8)
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


def unpack(buf: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The inverse of :func:`pack` (used by tests and benchmarks)."""
    if buf[:4] != MAGIC:
        raise ValueError("not a CRL1 buffer")
    (n,) = struct.unpack("<I", buf[4:8])
    header = json.loads(buf[8 : 8 + n])
    start = 8 + n
    out = {}
    for c in header["columns"]:
        dt = np.dtype(c["dtype"]).newbyteorder("<")
        out[c["name"]] = np.frombuffer(buf, dtype=dt, count=c["length"], offset=start + c["offset"])
    return header, out


def gzip_bytes(data: bytes, *, level: int = 6) -> bytes:
    """gzip with a fixed mtime, so the same data always gives the same bytes (and ETag)."""
    return gzip.compress(data, compresslevel=level, mtime=0)
