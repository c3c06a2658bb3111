"""Recognition: ``POST /api/recognize`` (images or vectors in, labels or "unknown" out), the
service status, and the pre-labelling suggestions of a map.

A request carries images (``multipart/form-data``, any field name, several files), or vectors
(``application/json`` ``{"vectors": [[...], ...]}``, raw little-endian float32 as
``application/octet-stream``, or a ``.npy`` array as ``application/x-npy``). Every input gets its
own answer with its own ``status``: a corrupt upload, an oversized file or a NaN vector is a 4xx
for that input while the others are answered. The HTTP status is 200 when at least one input was
answered, otherwise that of the first failure. Options go in the query string (``k``,
``threshold``, ``top``, and ``model`` / ``weights_hash`` to have vectors from another embedder
refused) or, for JSON, in the body. When the index was built from detector crops (faces, say),
each image is answered per box: ``{"detector", "width", "height", "regions": [{"bbox", "label",
"score", "top", ...}]}``; ``regions=false`` names whole images instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api.decodebudget import DecodeBusy
from corral.api.deps import Map, Reader
from corral.api.deps import Recognizer as ServiceUser
from corral.api.errors import ApiError
from corral.api.inputs import read_npy
from corral.api.redact import for_user
from corral.api.recognize_service import NotReady, RecognitionService
from corral.storage.index import RecognitionIndexError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["recognize"])

#: Most images in one request, and most vectors.
MAX_IMAGES = 256
MAX_VECTORS = 10_000
#: Largest image file accepted when the app's settings do not say.
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024


async def get_service(request: Request) -> RecognitionService:
    """The app's recognition service; made (for the app's workspace) on first use."""
    ctx = request.app.state.ctx
    svc = ctx.extra.get("recognition")
    if svc is not None:
        return svc
    async with ctx.extra.setdefault("recognition_lock", asyncio.Lock()):
        svc = ctx.extra.get("recognition")
        if svc is None:
            from corral.storage.index_source import WorkspaceSource

            svc = RecognitionService(WorkspaceSource(ctx.workspace.root), reload_interval_s=5.0, budget=ctx.extra.get("decodes"))
            await svc.start()
            ctx.extra["recognition"] = svc
    return svc


def _max_upload(request: Request) -> int:
    settings = getattr(request.app.state.ctx, "settings", None)
    return int(getattr(settings, "max_upload_bytes", DEFAULT_MAX_UPLOAD) or DEFAULT_MAX_UPLOAD)


def _fail(inp: Any, status: int, message: str) -> dict[str, Any]:
    return {"input": inp, "status": status, "error": message}


def _ok(inp: Any, decision: Any, version: str) -> dict[str, Any]:
    return {"input": inp, "status": 200, **decision.as_dict(), "version": version}


_SKIP_STATUS = {"empty": 400, "too_large": 413}


async def _images(request: Request, svc: RecognitionService, *, k: int | None, threshold: float | None, top: int, regions: bool | None = None) -> list[dict[str, Any]]:
    try:
        form = await request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES + 20)
    except StarletteHTTPException:  # the request guard's 408 / 413: the body was too slow or too large
        raise
    except Exception as e:  # starlette raises its own types for malformed or excessive multipart bodies
        raise ApiError(f"could not read the multipart body: {str(e)[:200]} (at most {MAX_IMAGES} files)") from None
    uploads = [(key, v) for key, v in form.multi_items() if hasattr(v, "read") and hasattr(v, "filename")]
    if not uploads:
        raise ApiError("no files in the multipart request: attach images as form files (any field name)")
    limit = _max_upload(request)

    async def one(i: int, upload: Any) -> dict[str, Any]:
        name = upload.filename or f"file{i}"
        try:
            data = await upload.read(limit + 1)
        finally:
            await upload.close()
        if len(data) > limit:
            return _fail(name, 413, f"file is over the upload limit of {limit} bytes")
        if not data:
            return _fail(name, 400, "empty file")
        from corral.pipeline.decode import SkipItem

        try:
            if per_box:
                found, version = await asyncio.to_thread(svc.recognize_regions, data, k=k, threshold=threshold, top=top)
                return {"input": name, "status": 200, **found, "version": version}
            image = await svc.decode(data)
            decision, version = await svc.recognize_image(image, k=k, threshold=threshold, top=top)
        except SkipItem as e:
            return _fail(name, _SKIP_STATUS.get(e.reason, 422), f"{e.reason}: {e.detail}"[:300] if e.detail else e.reason)
        except DecodeBusy as e:  # this image waited too long for memory to decode in; the others are answered
            return _fail(name, 503, str(e))
        return _ok(name, decision, version)

    cur = svc.require()
    per_box = cur.regions is not None if regions is None else regions
    if per_box and cur.regions is None:
        raise ApiError("regions=true needs an index built from detector crops (with its detector installed here)", status=409)

    return list(await asyncio.gather(*(one(i, u) for i, (_, u) in enumerate(uploads))))


def _vector_rows(raw: Any, dim: int) -> tuple[list[Any], list[dict[str, Any] | None]]:
    """Per input: the row (or None) and its failure (or None)."""
    rows: list[Any] = []
    fails: list[dict[str, Any] | None] = []
    for i, v in enumerate(raw):
        arr = None
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
            pass
        if arr is None or arr.ndim != 1:
            rows.append(None)
            fails.append(_fail(i, 422, "not a list of numbers"))
        elif arr.shape[0] != dim:
            rows.append(None)
            fails.append(_fail(i, 422, f"dimension {arr.shape[0]}; this index expects {dim}"))
        elif not np.isfinite(arr).all():
            rows.append(None)
            fails.append(_fail(i, 422, "holds NaN or infinite values"))
        elif not np.any(arr):
            rows.append(None)
            fails.append(_fail(i, 422, "a zero vector has no direction"))
        else:
            rows.append(arr.astype(np.float32))
            fails.append(None)
    return rows, fails


async def _vectors(svc: RecognitionService, raw: Any, *, k: int | None, threshold: float | None, top: int, model: str | None, weights_hash: str | None) -> list[dict[str, Any]]:
    cur = svc.require()
    n = len(raw)
    if n == 0:
        raise ApiError('no vectors in the request: send {"vectors": [[...], ...]}')
    if n > MAX_VECTORS:
        raise ApiError(f"{n} vectors in one request; send at most {MAX_VECTORS}", status=413)
    rows, fails = _vector_rows(raw, cur.recognizer.index.dim)
    good = [i for i, r in enumerate(rows) if r is not None]
    out: list[dict[str, Any]] = [f for f in fails]  # type: ignore[misc]
    if good:
        try:
            decisions, version = await asyncio.to_thread(svc.recognize_vectors, np.stack([rows[i] for i in good]), k=k, threshold=threshold, top=top, model=model, weights_hash=weights_hash)
        except RecognitionIndexError as e:
            raise ApiError(str(e), status=409) from None
        for i, d in zip(good, decisions):
            out[i] = _ok(i, d, version)
    return out


def _binary(body: bytes, npy: np.ndarray | None, dim: int) -> Any:
    """Vectors from a binary body: a ``.npy`` array already read with :func:`read_npy`, or raw float32."""
    if npy is not None:
        if npy.dtype.kind not in "fiu" or npy.ndim not in (1, 2):
            raise ApiError(f".npy array of dtype {npy.dtype} and {npy.ndim} dimension(s); send a 2-d float array (n, {dim})", status=422)
        return npy.reshape(1, -1) if npy.ndim == 1 else npy
    if len(body) % (4 * dim):
        raise ApiError(f"raw body of {len(body)} bytes is not a whole number of float32 vectors of dimension {dim} ({4 * dim} bytes each)", status=422)
    return np.frombuffer(body, dtype="<f4").reshape(-1, dim)


@router.post("/api/recognize", summary="Name images or vectors (top-k labels with scores, or unknown)")
async def recognize(
    request: Request,
    user: ServiceUser,
    k: int | None = Query(default=None, ge=1, le=1000, description="neighbours that vote (default: the index's)"),
    threshold: float | None = Query(default=None, ge=-1, le=1, description="unknown when the margin (score minus the label's typical score) is below this (default: the calibrated one)"),
    top: int = Query(default=5, ge=1, le=100, description="labels listed per input"),
    model: str | None = Query(default=None, max_length=200, description="embedder the vectors came from; refused when not the index's"),
    weights_hash: str | None = Query(default=None, max_length=200, description="weights hash of that embedder"),
    regions: bool | None = Query(default=None, description="images: name every box the index's detector finds (default: yes when the index holds detector crops)"),
) -> JSONResponse:
    svc = await get_service(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            results = await _images(request, svc, k=k, threshold=threshold, top=top, regions=regions)
        elif ctype == "application/json":
            try:
                # megabytes of vectors: parse them in a worker thread, not on the event loop
                body = await asyncio.to_thread(json.loads, await request.body())
            except (ValueError, RecursionError):  # RecursionError: nesting too deep
                raise ApiError("body is not valid JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("vectors"), list):
                raise ApiError('JSON body must be an object with "vectors": a list of vectors (lists of numbers)')
            opts = _json_options(body, k=k, threshold=threshold, top=top, model=model, weights_hash=weights_hash)
            results = await _vectors(svc, body["vectors"], **opts)
        elif ctype in ("application/octet-stream", "application/x-npy"):
            body = await request.body()
            if not body:
                raise ApiError("empty body: send float32 vectors")
            npy = read_npy(body) if ctype == "application/x-npy" else None  # a lying header is refused before anything else
            arr = _binary(body, npy, svc.require().recognizer.index.dim)
            results = await _vectors(svc, list(arr), k=k, threshold=threshold, top=top, model=model, weights_hash=weights_hash)
        else:
            raise ApiError(f"content type {ctype or 'none'!r}: send multipart/form-data images, application/json vectors, application/octet-stream float32 or application/x-npy", status=415)
    except NotReady as e:
        raise ApiError(str(e), status=503) from None
    answered = sum(1 for r in results if r["status"] == 200)
    status = 200 if answered else int(results[0]["status"])
    cur = svc.current
    # the version that answered (a reload may have swapped versions since)
    version = next((r["version"] for r in results if r["status"] == 200), cur.version if cur else None)
    busy = any(r["status"] == 503 for r in results)
    return JSONResponse(
        {"results": results, "answered": answered, "failed": len(results) - answered, "version": version, "model": cur.recognizer.index.meta.model if cur else None},
        status_code=status,
        headers={"Retry-After": str(svc.budget.retry_after_s)} if busy else None,
    )


def _json_options(body: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """k / threshold / top / model / weights_hash from a JSON body, falling back to the query."""
    out = dict(defaults)
    for key in ("k", "top"):
        if key in body and body[key] is not None:
            v = body[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= (1000 if key == "k" else 100):
                raise ApiError(f"{key}={v!r}: expected a whole number from 1 to {1000 if key == 'k' else 100}", status=422)
            out[key] = v
    if body.get("threshold") is not None:
        t = body["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not -1 <= t <= 1:
            raise ApiError(f"threshold={t!r}: expected a number from -1 to 1", status=422)
        out["threshold"] = float(t)
    for key in ("model", "weights_hash"):
        if body.get(key) is not None:
            if not isinstance(body[key], str):
                raise ApiError(f"{key} must be a string", status=422)
            out[key] = body[key]
    return out


@router.get("/api/recognize/status", summary="The loaded index version, its counts and the batcher's")
async def recognize_status(request: Request, user: ServiceUser) -> dict[str, Any]:
    """Where the index comes from and why it may not be loaded; only curators and admins see the
    server's absolute paths in it."""
    return for_user((await get_service(request)).status(), user)


@router.get("/api/maps/{name}/suggestions", summary="Labels the index proposes for a map's new points, by label")
def suggestions(view: Map, request: Request, user: Reader) -> dict[str, Any]:
    from corral.storage.suggestions import pending_suggestions

    ctx = request.app.state.ctx
    store = ctx.labels.store if ctx.labels is not None else None
    sug = pending_suggestions(ctx.workspace, view.name, store=store)
    groups = []
    for label, ids, margins in sug.groups():
        idx = view.index_of(ids)
        keep = idx >= 0
        groups.append({"label": label, "count": int(keep.sum()), "indices": idx[keep].tolist(), "margins": [round(float(s), 4) for s, k in zip(margins, keep) if k]})
    return {"map": view.name, "etag": view.etag, "created_at": sug.meta.get("created_at"), "threshold": sug.meta.get("threshold"), "total": sum(g["count"] for g in groups), "groups": groups}
