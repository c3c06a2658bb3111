"""Item id -> where its image lives, from the workspace's items tables (read once per change)."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa

from corral.api.errors import ApiError, NotFound
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_item_id(item_id: str) -> str:
    """Item ids are hashes: letters, digits, '_' and '-'. Anything else (a path) is refused."""
    if not _ID.match(item_id or ""):
        raise ApiError(f"item id {item_id[:80]!r} is not an item id (expected letters and digits)")
    return item_id


class ItemIndex:
    """Sorted arrays of the workspace's usable items (status ok): id, uri, width, height."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._ids = np.empty(0, dtype="S1")
        self._uris: list[str] = []
        self._size: np.ndarray = np.empty((0, 2), dtype=np.int64)
        self._parents: list[str | None] = []

    def _files_stamp(self) -> tuple:
        out = []
        for es in self.workspace.embedding_sets():
            for p in sorted(es.path.glob("part-*.items.parquet")):
                st = p.stat()
                out.append((str(p), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _refresh(self) -> None:
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        t = self.workspace.items()
        ids = t.column("id").to_pylist()
        uris = t.column("uri").to_pylist()
        status = t.column("status").to_pylist()
        w = t.column("width").to_pylist()
        h = t.column("height").to_pylist()
        parents = t.column("parent_id").to_pylist() if "parent_id" in t.column_names else [None] * t.num_rows
        keep = [i for i, s in enumerate(status) if s == "ok" and ids[i]]
        arr = np.array([ids[i] for i in keep], dtype=np.bytes_) if keep else np.empty(0, dtype="S1")
        order = np.argsort(arr, kind="stable")
        self._ids = arr[order]
        self._uris = [uris[keep[i]] for i in order]
        self._parents = [parents[keep[i]] for i in order]
        self._size = np.array([[w[keep[i]], h[keep[i]]] for i in order], dtype=np.int64).reshape(-1, 2)
        self._stamp = stamp
        logger.info("item index: %d items", len(self._uris))

    def _find(self, ids: list[str]) -> np.ndarray:
        with self._lock:
            self._refresh()
            if not len(self._ids) or not ids:
                return np.full(len(ids), -1, dtype=np.int64)
            q = np.asarray(ids).astype(np.bytes_)
            at = np.searchsorted(self._ids, q)
            at_c = np.minimum(at, len(self._ids) - 1)
            return np.where((at < len(self._ids)) & (self._ids[at_c] == q), at_c, -1)

    def uris(self, ids: list[str]) -> list[str | None]:
        """The uri of each id (None for ids no embed run recorded as usable)."""
        pos = self._find(ids)
        with self._lock:
            return [self._uris[p] if p >= 0 else None for p in pos]

    def uri(self, item_id: str) -> str:
        check_item_id(item_id)
        u = self.uris([item_id])[0]
        if u is None:
            raise NotFound(f"no item {item_id!r} in this workspace")
        return u

    def _position(self, item_id: str) -> int:
        """The item's row in the sorted arrays (404 when the workspace has no such usable item)."""
        check_item_id(item_id)
        pos = int(self._find([item_id])[0])
        if pos < 0:
            raise NotFound(f"no item {item_id!r} in this workspace")
        return pos

    def content_id(self, item_id: str) -> str:
        """The content hash the item's file must still have: its own id, or its parent's for a crop."""
        pos = self._position(item_id)
        with self._lock:
            return self._parents[pos] or item_id

    def info(self, item_id: str) -> dict:
        pos = self._position(item_id)
        with self._lock:
            uri = self._uris[pos]
            w, h = (int(v) for v in self._size[pos])
        return {"id": item_id, "uri": uri, "name": file_name(uri), "width": w, "height": h}


def file_name(uri: str | None) -> str:
    """The last part of a path or s3:// uri."""
    if not uri:
        return ""
    return PurePosixPath(uri.replace("\\", "/")).name


def names_array(index: ItemIndex, ids: pa.Array) -> pa.Array:
    """File names for a column of ids (empty string where unknown)."""
    uris = index.uris(ids.to_pylist())
    return pa.array([file_name(u) for u in uris], type=pa.string())
