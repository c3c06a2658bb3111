"""Maps: the list, one map's points (binary), clusters, hierarchy, point details, search, atlases and split."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from corral.api.deps import Ctx, Map, Reader, Writer, label_service
from corral.api.errors import ApiError
from corral.api.hierarchy import hierarchy_blob, missing
from corral.api.inputs import Count, Index, Int64, Points
from corral.api.itemindex import names_array
from corral.api.mapdata import MapView
from corral.api.routes.common import IMMUTABLE, REVALIDATE, file_or_bytes, gzip_response
from corral.api.thumbs import atlas_layout
from corral.storage.maps import HIERARCHY

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/maps", tags=["maps"])


class Indices(BaseModel):
    indices: list[Index] = Field(description="point indices (positions in the map's draw order)")
    etag: str | None = Field(default=None, description="the map version the indices refer to")


class SplitRequest(BaseModel):
    indices: Points  # a selection to split may be large: packed, or a list
    etag: str | None = Field(default=None, description="the map version the indices refer to")
    min_cluster_size: Count | None = Field(default=None, ge=2, description="HDBSCAN min_cluster_size for the sub-clusters")


def _map_summary(view: MapView) -> dict[str, Any]:
    meta = view.meta
    return {
        "name": view.name,
        "etag": view.etag,
        "n": view.n,
        "clusters": int(view.clusters.num_rows),
        "created_at": meta.get("created_at"),
        "embeddings": meta.get("embeddings") or meta.get("embedding_set"),
        "model": meta.get("model"),
    }


@router.get("", summary="Maps in the workspace, newest first")
def list_maps(ctx: Ctx, user: Reader) -> dict[str, Any]:
    out = []
    for name in ctx.maps.names():
        try:
            out.append(ctx.maps.summary(name))
        except (OSError, ValueError) as e:
            out.append({"name": name, "error": f"unreadable map: {e}"})
    out.sort(key=lambda m: str(m.get("created_at") or ""), reverse=True)
    return {"maps": out, "default": ctx.maps.default_name()}


@router.get("/{name}", summary="A map's metadata, clusters and how to fetch its data")
def get_map(view: Map, ctx: Ctx, user: Reader) -> dict[str, Any]:
    has_tree = (ctx.workspace.map_dir(view.name) / HIERARCHY).is_file()  # a stat, not a read: this answer is on the first frame's path
    return {
        **_map_summary(view),
        "bounds": view.bounds,
        "grid": view.grid,
        "meta": view.meta,
        "points_url": f"/api/maps/{view.name}/points.bin?v={view.etag}",
        "labels_url": f"/api/maps/{view.name}/labels.bin",
        "hierarchy_url": f"/api/maps/{view.name}/hierarchy.bin?v={view.etag}" if has_tree else None,
        "atlas": atlas_layout(),
    }


@router.get("/{name}/points.bin", summary="Every point, packed (CRL1 container, gzip)")
def points_bin(request: Request, view: Map, user: Reader, v: str | None = None):
    t0 = time.perf_counter()
    body = view.blob()
    logger.debug("points.bin %s: %d bytes in %.3fs", view.name, len(body), time.perf_counter() - t0)
    return gzip_response(request, body, etag=view.etag, cache=IMMUTABLE if v == view.etag else REVALIDATE)


@router.get("/{name}/hierarchy.bin", summary="The cluster hierarchy (HDBSCAN's condensed tree), packed (CRL1 container, gzip)")
def hierarchy_bin(request: Request, view: Map, ctx: Ctx, user: Reader, v: str | None = None):
    """Nodes (``node_parent``, ``node_size``, ``node_lambda``, ``node_cluster``), ``cluster_node``
    per flat cluster and ``point_node`` per point index; see :mod:`corral.pipeline.hierarchy`.
    404 when the map keeps no hierarchy."""
    body = hierarchy_blob(view, ctx.workspace.map_dir(view.name), ctx.extra)
    if body is None:
        raise missing(view.name)
    return gzip_response(request, body, etag=view.etag, cache=IMMUTABLE if v == view.etag else REVALIDATE)


@router.get("/{name}/clusters", summary="Clusters with size, cohesion and exemplar points")
def clusters(view: Map, user: Reader) -> dict[str, Any]:
    return {"etag": view.etag, "clusters": view.clusters_json()}


@router.post("/{name}/points", summary="Details of some points (ids, file names, scores, labels)")
def points(body: Indices, view: Map, ctx: Ctx, user: Reader) -> dict[str, Any]:
    view.require_etag(body.etag)
    if len(body.indices) > ctx.settings.max_points_per_request:
        raise ApiError(f"indices: at most {ctx.settings.max_points_per_request} points per request, got {len(body.indices)}")
    idx = np.asarray(body.indices, dtype=np.int64)
    view.check_indices(idx)
    ids = view.ids_at(idx)
    uris = ctx.items.uris(ids)
    ml = label_service(ctx).for_map(view)
    names = {lab["id"]: lab["name"] for lab in label_service(ctx).labels()}
    from corral.api.itemindex import file_name
    from corral.storage.crops import FRAGMENT

    out = []
    for i, item_id, uri in zip(idx.tolist(), ids, uris):
        lab = int(ml.label[i])
        out.append(
            {
                "index": i,
                "id": item_id,
                "name": file_name(uri),
                "has_image": uri is not None,
                "crop": bool(uri and FRAGMENT in uri),  # a detector's box: the photos view revises it
                "cluster": int(view.cluster[i]),
                "probability": round(float(view.probability[i]), 4),
                "outlier_score": round(float(view.outlier[i]), 4),
                "is_new": bool(view.is_new[i]),
                "label": names.get(lab) if lab else None,
                "excluded": bool(ml.state[i] & 1),
            }
        )
    return {"etag": view.etag, "points": out}


def _names(ctx: Ctx, view: MapView) -> pa.Array:
    key = ("names", view.name, view.etag)
    arr = ctx.extra.get(key)
    if arr is None:
        arr = names_array(ctx.items, view.ids)
        ctx.extra = {k: v for k, v in ctx.extra.items() if not (isinstance(k, tuple) and k[:2] == ("names", view.name))}
        ctx.extra[key] = arr
    return arr


@router.get("/{name}/search", summary="Points whose file name or label contains the text")
def search(view: Map, ctx: Ctx, user: Reader, q: str = Query(min_length=1, max_length=200), limit: Annotated[Count | None, Query(ge=1)] = None) -> dict[str, Any]:
    needle = q.strip().lower()
    if not needle:
        raise ApiError("q: give some text to search for")
    hit = np.asarray(pc.match_substring(_names(ctx, view), needle, ignore_case=True).to_numpy(zero_copy_only=False), dtype=bool)
    svc = label_service(ctx)
    matching = [lab["id"] for lab in svc.labels() if needle in lab["name"].lower() or any(needle in a.lower() for a in lab["aliases"])]
    labels_hit = np.zeros(view.n, dtype=bool)
    if matching:
        labels_hit = np.isin(svc.for_map(view).label, np.asarray(matching, dtype=np.uint32))
    idx = np.flatnonzero(hit | labels_hit)
    total = int(idx.size)
    if limit is not None:
        idx = idx[:limit]
    return {"query": q, "total": total, "by_name": int(hit.sum()), "by_label": int(labels_hit.sum()), "indices": idx.tolist()}


@router.get("/{name}/atlas/{lod}/{k}.jpg", summary="A texture atlas of point thumbnails", response_class=FileResponse)
def atlas(view: Map, ctx: Ctx, user: Reader, lod: Int64, k: Int64, v: str | None = None):
    made = ctx.thumbs.atlas(view, lod, k)
    return file_or_bytes(made, media_type="image/jpeg", headers={"Cache-Control": IMMUTABLE if v == view.etag else REVALIDATE})


@router.post("/{name}/split", summary="Re-cluster a selection into sub-clusters")
def split(body: SplitRequest, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx = view.check_indices(body.indices)
    if idx.size < 4:
        raise ApiError(f"indices: select at least 4 points to split, got {idx.size}")
    if body.min_cluster_size is not None and body.min_cluster_size > idx.size:
        raise ApiError(f"min_cluster_size={body.min_cluster_size}: larger than the selection of {idx.size} points")
    try:
        from corral.pipeline.mapping import recluster
    except ImportError:
        raise ApiError("splitting needs corral.pipeline.mapping, which this installation lacks", status=501) from None

    t0 = time.perf_counter()
    try:
        subs = recluster(workspace=ctx.workspace, map_name=view.name, ids=view.ids_at(idx), min_cluster_size=body.min_cluster_size)
    except ValueError as e:  # the stage's own input checks (sizes, ids)
        raise ApiError(str(e).splitlines()[0]) from None
    out = []
    for k, sub in enumerate(subs):
        sidx = view.index_of(list(sub.ids))
        sidx = sidx[sidx >= 0]
        extra = {f: getattr(sub, f) for f in ("noise", "probability") if hasattr(sub, f)}
        out.append({"sub": k, "size": int(sidx.size), "indices": np.sort(sidx).tolist(), **{k2: v for k2, v in extra.items() if isinstance(v, (int, float, bool, str))}})
    return {"etag": view.etag, "seconds": round(time.perf_counter() - t0, 3), "subclusters": out}
