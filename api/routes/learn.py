"""The learning loop, live: suggested groups, hard items, label errors and near-duplicates of a map.

``GET /api/maps/{name}/learn`` answers the round for the label store's current version (computed on
first ask after each change, in the thread pool, one at a time per map). Accepting a group is an
ordinary assign minus exclusions that must name the ``labels_version`` the round was computed for:
if the labels moved since (another curator's action, a label deleted or merged), the acceptance is
refused with 409 and the viewer fetches the new round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from corral.api.deps import AppContext, Ctx, Map, Reader, Writer, label_service
from corral.api.errors import ApiError, Conflict
from corral.api.routes.labels import ActionBase, _check_selection

router = APIRouter(tags=["learn"])


class AcceptBody(ActionBase):
    labels_version: int = Field(description="the labels version the suggestions were computed for (from GET .../learn)")
    label: str = Field(description="the suggested label (or the name the curator gives the group instead)")
    indices: list[int] = Field(description="the group's points")
    exclude: list[int] = Field(default_factory=list, description="points of the group that are not this label")


def _cache(ctx: AppContext) -> Any:
    from corral.pipeline.loop import RoundCache

    cache = ctx.extra.get("learn")
    if cache is None:
        cache = ctx.extra.setdefault("learn", RoundCache(ctx.workspace))
    return cache


@router.get("/api/maps/{name}/learn", summary="The learning loop's round for the current labels: suggested groups and queues")
def learn_round(view: Map, ctx: Ctx, user: Reader, limit: int = 200) -> dict[str, Any]:
    from corral.pipeline.learn import LearnError

    if not 1 <= limit <= 1000:
        raise ApiError("limit: must be between 1 and 1000")
    store = label_service(ctx).store
    try:
        rnd = _cache(ctx).get(view.name, store)
    except LearnError as e:
        return {"map": view.name, "ready": False, "reason": str(e), "labels_version": int(store.version())}
    if len(rnd.ids) != view.n:
        raise Conflict(f"map {view.name!r} changed while the round was computed; ask again")
    position = np.empty(view.n, dtype=np.int64)
    position[view.order] = np.arange(view.n)  # points-file row -> the viewer's point index
    return {"ready": True, "etag": view.etag, **rnd.to_json(limit=limit, position=position)}


@router.post("/api/maps/{name}/learn/accept", summary="Accept a suggested group (minus exclusions): an ordinary assign")
def accept(body: AcceptBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx, ex = _check_selection(view, body.indices, body.exclude)
    ids, ex_ids = view.ids_at(idx), view.ids_at(ex)

    def act(store: Any) -> Any:
        now = int(store.version())
        if now != body.labels_version:
            raise Conflict(f"the suggestions were made for labels version {body.labels_version}; the labels are at {now} now: fetch the new round")
        return store.assign(ids, body.label, user=user.name, exclude=ex_ids, duration_ms=body.duration_ms)

    return label_service(ctx).act(view, act, since=body.since)
