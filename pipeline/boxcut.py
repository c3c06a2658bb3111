"""One box a curator adjusted or drew: cut from its photo, embedded, written, placed on the map.

The crop is cut and embedded exactly as the detect step cuts the detector's boxes
(:func:`corral.pipeline.crops.cut_squares` with the set's ``pad``, the embedder's input size and its
own ``min_crop_pad``; :func:`corral.pipeline.crops.embed_crops`), with the embedder the embedding set
was made with, so its vector sits among the others. It is written as a new shard of that set and
placed on every map of the set by :func:`corral.pipeline.mapping.update_map` (the ``--update``
placement: no other point moves).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from corral.pipeline import registry
from corral.pipeline.crops import crop_id, crop_uri, cut_squares, embed_crops
from corral.pipeline.decode import DEFAULT_MAX_PIXELS, open_image
from corral.storage.boxes import CURATOR
from corral.storage.maps import list_maps, read_map
from corral.storage.workspace import EmbeddingSet, Workspace, WorkspaceError, atomic_write_table, embedding_table, items_table

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedders: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class CutBox:
    id: str  # the crop item's id
    bbox: tuple[int, int, int, int]
    new: bool  # False when the workspace already had this crop (its vector and map point are reused)


def set_embedder(es: EmbeddingSet) -> Any:
    """The embedder ``es`` was made with (loaded once per process; offline; weights checked)."""
    side = es.sidecar()
    model = side.get("model")
    if not model:
        raise WorkspaceError(f"embedding set {es.name!r} does not record its model; re-embed it")
    want = side.get("weights_hash")
    key = (model, str(want))
    with _lock:
        emb = _embedders.get(key)
        if emb is None:
            emb = registry.create_embedder(model, offline=True)
            got = emb.info.get("weights_hash")
            if want and got and got != want:
                raise WorkspaceError(f"embedding set {es.name!r} was made with {model} weights {want}; the weights found here hash to {got}")
            _embedders[key] = emb
    return emb


def embed_box(data: bytes, bbox: tuple[int, int, int, int], *, es: EmbeddingSet, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The vector of one box of the photo ``data`` (its bytes), cut and embedded as the set's crops were."""
    import torch

    embedder = set_embedder(es)
    side = es.sidecar()
    pad = max(float((side.get("detection") or {}).get("pad", 0.2)), float(getattr(embedder, "min_crop_pad", 0.0)))
    img = np.array(open_image(data, max_pixels=max_pixels))
    with _lock:  # one embedder, many request threads
        px, inner = cut_squares(torch.from_numpy(img), [list(bbox)], size=int(embedder.preprocess.size), pad=pad)
        vec = embed_crops(embedder, px, inner, batch_size=1)
    return vec[0]


def _next_shard(es: EmbeddingSet) -> int:
    used = [int(p.name[5:10]) for p in es.path.glob("part-*.parquet") if p.name[5:10].isdigit()]
    return max(used, default=-1) + 1


def write_box(es: EmbeddingSet, *, parent: dict[str, Any], bbox: tuple[int, int, int, int], vector: np.ndarray, origin: str, replaces: str | None) -> str:
    """Write one curator crop (item row + vector) as a new shard of ``es``; returns its id."""
    cid = crop_id(parent["id"], list(bbox))
    x, y, w, h = bbox
    meta = {"detector": CURATOR, "origin": origin, "replaces": replaces}
    row = {"id": cid, "uri": crop_uri(parent["uri"], list(bbox)), "status": "ok", "width": w, "height": h, "parent_id": parent["id"], "bbox": [x, y, w, h], "meta": meta}
    with _lock:
        k = _next_shard(es)
        emb_path, items_path = es.shard_paths(k)
        atomic_write_table(emb_path, embedding_table([cid], np.asarray(vector, np.float32).reshape(1, -1)))
        atomic_write_table(items_path, items_table([row]))  # the completion marker, written last
    logger.info("box %s of photo %s (%s) written as shard %d of %s", json.dumps(list(bbox)), parent["id"], origin, k, es.name)
    return cid


def place_new(ws: Workspace, es: EmbeddingSet) -> list[str]:
    """Place what is new in ``es`` on every map made from it (``--update``); returns the maps updated."""
    from corral.pipeline.mapping import update_map

    done = []
    for name in list_maps(ws):
        try:
            meta = read_map(ws, name).meta
        except WorkspaceError:
            continue
        if meta.get("embeddings") not in (None, es.name):
            continue
        update_map(workspace=ws, embeddings=es.name, map_name=name)
        done.append(name)
    return done


def cut_box(ws: Workspace, *, parent: dict[str, Any], data: bytes, bbox: tuple[int, int, int, int], known: set[str], origin: str, replaces: str | None = None) -> CutBox:
    """The crop of ``bbox`` on the photo ``parent`` (an items row; ``data`` its bytes), embedded,
    written and placed on the maps, unless the workspace already has that crop (``known`` ids)."""
    es = _set_of(ws, parent)
    cid = crop_id(parent["id"], list(bbox))
    if cid in known:
        return CutBox(cid, bbox, False)
    vec = embed_box(data, bbox, es=es)
    write_box(es, parent=parent, bbox=bbox, vector=vec, origin=origin, replaces=replaces)
    place_new(ws, es)
    return CutBox(cid, bbox, True)


def _set_of(ws: Workspace, parent: dict[str, Any]) -> EmbeddingSet:
    """The embedding set whose crops came from ``parent`` (the newest that lists it)."""
    for es in sorted(ws.embedding_sets(), key=lambda s: s.sidecar_path.stat().st_mtime, reverse=True):
        if parent["id"] in set(es.items().column("id").to_pylist()):
            return es
    raise WorkspaceError(f"no embedding set lists photo {parent['id']}")
