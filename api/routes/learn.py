"""The learning loop, live: suggested groups, hard items, label errors and near-duplicates of a map.

``GET /api/maps/{name}/learn`` answers the round for the label store's current version (computed on
first ask after each change, in the thread pool, one at a time per map). Accepting a group is an
ordinary assign minus exclusions that must name the ``labels_version`` the round was computed for:
if the labels moved since (another curator's action, a label deleted or merged), the acceptance is
refused with 409 and the viewer fetches the new round.

A proposal of what to name next that a curator passed over (] past it, or another selection made
while it was on offer) is stored with who and when (``POST .../learn/pass``); every later round's
``next`` puts the proposals that lie in one passed over, by any curator of the map, after the
others (:func:`corral.pipeline.loop.passed_last`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from corral.api.deps import AppContext, Ctx, Map, Reader, Writer, label_service
from corral.api.errors import ApiError, Conflict
from corral.api.inputs import Count, Index, Points
from corral.api.routes.labels import ActionBase, _check_selection

router = APIRouter(tags=["learn"])


class AcceptBody(ActionBase):
    labels_version: Count = Field(description="the labels version the suggestions were computed for (from GET .../learn)")
    label: str = Field(description="the suggested label (or the name the curator gives the group instead)")
    indices: Points
    exclude: list[Index] = Field(default_factory=list, description="points of the group that are not this label")


class PassBody(BaseModel):
    indices: Points
    how: Literal["skip", "replaced"] = Field(description='"skip" (] went past it) or "replaced" (another selection was made while it was on offer)')
    kind: Literal["group", "cluster"] = Field(description="what was passed over: a regrouped group or a map cluster (suggested groups are the model's)")
    labels_version: Count | None = Field(default=None, description="the labels version the proposal was made for")
    etag: str | None = None


def _cohesion(view: Any) -> np.ndarray:
    from corral.pipeline.loop import cohesion_by_cluster

    return cohesion_by_cluster(view.clusters)


def _cache(ctx: AppContext) -> Any:
    from corral.pipeline.loop import RoundCache

    cache = ctx.extra.get("learn")
    if cache is None:
        cache = ctx.extra.setdefault("learn", RoundCache(ctx.workspace))
    return cache


@router.get("/api/maps/{name}/learn", summary="The learning loop's round for the current labels: suggested groups and queues")
def learn_round(view: Map, ctx: Ctx, user: Reader, limit: Count = 200, wait: bool = True) -> dict[str, Any]:
    """With ``wait=false`` the answer comes at once: the round when it is current, else ``ready:
    false, computing: true`` with the next proposals that need no model (the groups the last round
    regrouped that are still unlabelled, then the map's clusters), and the round is computed in the
    background for the next ask."""
    from corral.pipeline.learn import LearnError
    from corral.pipeline.loop import next_groups

    if not 1 <= limit <= 1000:
        raise ApiError("limit: must be between 1 and 1000")
    svc = label_service(ctx)
    store = svc.store
    labelled = svc.for_map(view).label > 0
    position = np.empty(view.n, dtype=np.int64)
    position[view.order] = np.arange(view.n)  # points-file row -> the viewer's point index
    if not wait:
        last, current, reason = _cache(ctx).peek(view.name, store)
        if not current:
            old = last if last is not None and len(last.ids) == view.n else None
            regrouped, near = _regrouped(old, position) if old is not None else (None, None)
            nxt = _passed_last(ctx, view, next_groups(view.cluster, labelled, regrouped=regrouped, regrouped_beside=near, cohesion=_cohesion(view)))
            out = {"map": view.name, "ready": False, "labels_version": int(store.version()), "next": _next_json(nxt)}
            return {**out, "reason": reason} if reason else {**out, "computing": True, "reason": "learning from the labels…"}
    try:
        rnd = _cache(ctx).get(view.name, store)
    except LearnError as e:
        nxt = _passed_last(ctx, view, next_groups(view.cluster, labelled, cohesion=_cohesion(view)))
        return {"map": view.name, "ready": False, "reason": str(e), "labels_version": int(store.version()), "next": _next_json(nxt)}
    if len(rnd.ids) != view.n:
        raise Conflict(f"map {view.name!r} changed while the round was computed; ask again")
    groups = rnd.result.groups
    regrouped, near = _regrouped(rnd, position)
    nxt = next_groups(view.cluster, labelled, [position[g.rows] for g in groups], [g.label for g in groups], regrouped=regrouped, regrouped_beside=near, cohesion=_cohesion(view))
    nxt = _passed_last(ctx, view, nxt)
    return {"ready": True, "etag": view.etag, **rnd.to_json(limit=limit, position=position), "next": _next_json(nxt)}


def _passed_last(ctx: AppContext, view: Any, nxt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``nxt`` with what any curator of the map passed over last (the stored passes' items as this
    map's point indices; items no longer on the map are dropped)."""
    from corral.pipeline.loop import passed_last

    store = _interactions(ctx)
    last = store.last_pass(view.name)
    if not last:
        return nxt
    # read back and turned into point indices once per new pass (not on every ask after a naming)
    cache = ctx.extra.setdefault("passes", {})
    hit = cache.get(view.name)
    if hit is None or hit[:2] != (last, view.etag):
        points = [idx[idx >= 0] for idx in (view.index_of(items) for items in store.passes(view.name))]
        hit = cache[view.name] = (last, view.etag, points)
    return passed_last(nxt, hit[2])


@router.post("/api/maps/{name}/learn/pass", summary="Record that a proposal of what to name next was passed over; later rounds offer it after the others")
def pass_over(body: PassBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    from corral.storage.interactions import InteractionError

    view.require_etag(body.etag)
    idx = view.check_indices(body.indices)
    if not len(idx):
        raise ApiError("indices: a pass names at least one point")
    try:
        pass_id = _interactions(ctx).record_pass(view.name, view.ids_at(idx), curator=user.name, how=body.how, kind=body.kind, labels_version=body.labels_version)
    except InteractionError as e:
        raise ApiError(str(e)) from None
    return {"pass_id": pass_id, "points": len(idx)}


def _regrouped(rnd: Any, position: np.ndarray) -> tuple[list[np.ndarray] | None, list[dict[str, str]] | None]:
    """A round's regrouped groups as viewer indices, and the label each branch lies beside."""
    from corral.pipeline.loop import beside

    rg = rnd.regrouping
    if rg is None:
        return None, None
    return [position[g] for g in rg.groups], [beside(rg, k, rnd.result.classes) for k in range(len(rg.groups))]


def _next_json(nxt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in e.items() if k != "rows"}, "indices": np.asarray(e["rows"]).tolist()} for e in nxt]


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


class ReviewTileBody(BaseModel):
    index: Index = Field(description="the tile's point index on the map")
    row: Count
    col: Count
    order: Count = Field(description="the tile's place in reading order")
    decision: str = Field(description='"match" (left alone: named), "not" (clicked as not this label: excluded) or "left" (left out by a cut: no verdict)')
    shown_ms: float | None = None
    hovers: list[tuple[float, float | None]] = Field(default_factory=list, description="(enter, leave) in ms after the page was shown")
    clicks: list[tuple[float, float, float]] = Field(default_factory=list, description="(t ms, x, y CSS px inside the tile)")
    decided_ms: float | None = None


class ReviewBody(BaseModel):
    page_id: str = Field(description="the client's id of this page (a page is recorded once)")
    label: str
    labels_version: Count = Field(description="the labels version the page's candidates came from")
    source: Literal["suggested", "likely", "members"] = Field(
        default="suggested", description='"suggested" (the model\'s group), "likely" (the model\'s likeliest items for the label) or "members" (a label\'s own items)'
    )
    shown_at: float = Field(description="Unix seconds when the page appeared")
    etag: str | None = None
    since: Count | None = None
    tiles: list[ReviewTileBody] = Field(min_length=1, max_length=200)


def _interactions(ctx: AppContext) -> Any:
    from corral.storage.interactions import InteractionStore

    store = ctx.extra.get("interactions")
    if store is None:
        store = ctx.extra.setdefault("interactions", InteractionStore.open(ctx.workspace))
    return store


@router.post("/api/maps/{name}/review", summary="Submit a review page: name its matching tiles, keep every tile's byproducts")
def review(body: ReviewBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    """The tiles left alone get the label and the clicked ones are excluded from it, in one assign
    (tiles a cut left out get neither: no verdict); the page's per-tile traces (place, hovers, clicks, time to decision) go to the interactions store
    with the event id. A page whose candidates came from older labels is refused with 409."""
    import time

    from corral.storage.interactions import DuplicatePage, InteractionError, ReviewPage, ReviewTile, check_page

    view.require_etag(body.etag)
    idx = view.check_indices([t.index for t in body.tiles])
    if len(idx) != len(body.tiles):
        raise ApiError("tiles: each point may appear once on a page")
    ids = dict(zip((t.index for t in body.tiles), view.ids_at(np.asarray([t.index for t in body.tiles]))))
    tiles = tuple(
        ReviewTile(
            item_id=ids[t.index],
            row=t.row,
            col=t.col,
            order=t.order,
            decision=t.decision,
            shown_ms=t.shown_ms,
            hovers=tuple(t.hovers),
            clicks=tuple(t.clicks),
            decided_ms=t.decided_ms,
            point_index=t.index,
        )
        for t in body.tiles
    )
    page = ReviewPage(page_id=body.page_id, label=body.label, map=view.name, source=body.source, shown_at=body.shown_at, submitted_at=time.time(), tiles=tiles)
    try:
        check_page(page)  # refuse a bad page before anything is labelled
    except InteractionError as e:
        raise ApiError(str(e)) from None
    store = _interactions(ctx)
    if store.has_page(body.page_id):
        raise Conflict(f"page {body.page_id!r} is already stored; a page is recorded once")
    keep = [ids[t.index] for t in body.tiles if t.decision == "match"]
    drop = [ids[t.index] for t in body.tiles if t.decision == "not"]
    if not keep and not drop:
        raise ApiError("tiles: every tile was left out (a cut): the page names and excludes nothing")

    def act(labels: Any) -> Any:
        now = int(labels.version())
        if now != body.labels_version:
            raise Conflict(f"the page was made for labels version {body.labels_version}; the labels are at {now} now: fetch a new page")
        if keep:  # one assign of the page minus the clicked tiles
            return labels.assign(keep + drop, body.label, user=user.name, exclude=drop)
        return labels.exclude(drop, body.label, user=user.name)

    out = label_service(ctx).act(view, act, since=body.since)
    from dataclasses import replace

    try:
        stored = store.record_page(replace(page, event_id=out["event_id"], labels_version=out["version"]), curator=user.name)
    except DuplicatePage as e:
        raise Conflict(str(e)) from None
    out["review"] = {"page_id": body.page_id, "tiles": stored, "named": len(keep), "excluded": len(drop), "left": len(body.tiles) - len(keep) - len(drop)}
    return out
