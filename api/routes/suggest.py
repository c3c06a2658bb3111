"""Suggested names for a selection, from the workspace's recognition index (when it has one)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from corral.api.deps import Ctx, Map, Reader
from corral.api.inputs import Index

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/maps", tags=["maps"])

MAX_SAMPLE = 512
_lock = threading.Lock()


class SuggestRequest(BaseModel):
    indices: list[Index] = Field(description=f"points to ask about (a sample of the selection; at most {MAX_SAMPLE})")
    etag: str | None = None
    top: int = Field(default=3, ge=1, le=10)


def _recognizer(ctx: Ctx) -> Any | None:
    """The index's recognizer, loaded once per version of the index folder; None without an index."""
    folder = ctx.workspace.index_dir
    try:
        stamp = max((p.stat().st_mtime_ns for p in folder.iterdir()), default=None) if folder.is_dir() else None
    except OSError:
        stamp = None
    if stamp is None:
        return None
    with _lock:
        cached = ctx.extra.get("recognizer")
        if cached and cached[0] == stamp:
            return cached[1]
        from corral.storage.index import LabelIndex
        from corral.storage.recognizer import Recognizer
        from corral.storage.workspace import WorkspaceError

        try:
            rec = Recognizer(LabelIndex.load(folder))
        except (WorkspaceError, OSError, ValueError) as e:
            logger.warning("recognition index at %s is unusable: %s", folder, e)
            return None
        ctx.extra["recognizer"] = (stamp, rec)
        return rec


@router.post("/{name}/suggest", summary="Top suggested names for some points (needs a recognition index)")
def suggest(body: SuggestRequest, view: Map, ctx: Ctx, user: Reader) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx = view.check_indices(body.indices[:MAX_SAMPLE])
    rec = _recognizer(ctx)
    if rec is None:
        return {"available": False, "reason": "this workspace has no recognition index yet", "suggestions": []}
    from corral.storage.index_build import read_vectors

    es = ctx.workspace.default_embedding_set(rec.index.meta.embedding_set or None)
    ids, vecs = read_vectors(es, set(view.ids_at(idx)))
    if not ids:
        return {"available": True, "asked": 0, "suggestions": []}
    votes: dict[str, list[float]] = {}
    for d in rec.recognize(vecs):
        if d.label is not None:
            votes.setdefault(d.label, []).append(d.score)
    ranked = sorted(votes.items(), key=lambda kv: (-len(kv[1]), -float(np.mean(kv[1]))))
    out = [{"label": lb, "votes": len(s), "share": round(len(s) / len(ids), 4), "score": round(float(np.mean(s)), 4)} for lb, s in ranked[: body.top]]
    return {"available": True, "asked": len(ids), "unknown": len(ids) - sum(len(s) for s in votes.values()), "suggestions": out}
