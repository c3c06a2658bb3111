"""Photos and their detector boxes: the photos grid, one photo's boxes and history, and revisions.

A revision (delete, adjust, draw) is one undoable event of the label store, with who and when;
``POST /api/photos/undo`` and ``/redo`` walk the same per-user stack as the map's undo. Each
revision may carry ``base``, the photo's ``version`` the client shows: when another curator
revised the photo since (re-cut and re-embedded its crops), the answer is 409 and nothing changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from corral.api.deps import Ctx, Reader, Writer
from corral.api.errors import ApiError, NotFound
from corral.api.inputs import Count, Text
from corral.api.itemindex import check_item_id

router = APIRouter(prefix="/api/photos", tags=["photos"])


class Revision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: Count | None = Field(default=None, description="the photo's version the client shows; 409 when it was revised since")


class BoxBody(Revision):
    bbox: list[float] = Field(min_length=4, max_length=4, description="[x, y, w, h] in the photo's pixels")
    clip: bool = Field(default=True, description="cut a box that reaches past the photo to its edge (false: refuse it)")


class DrawBody(BoxBody):
    label: Text | None = Field(default=None, max_length=200, description="name the new box at once")


class NameBody(Revision):
    label: Text = Field(min_length=1, max_length=200)


def _boxes(ctx: Ctx) -> Any:
    return ctx.extra["boxes"]


def _photo_bytes(ctx: Ctx, photo_id: str) -> bytes:
    """The photo's bytes; a photo that cannot be read now (moved, deleted, changed) keeps its boxes."""
    try:
        return ctx.thumbs.original_bytes(photo_id)
    except ApiError as e:
        raise ApiError(f"photo {photo_id} cannot be read now, so its boxes are left as they are: {e}", status=410) from None


@router.get("", summary="Photos with their boxes (filters: unnamed boxes, low detector score)")
def photos(
    ctx: Ctx,
    user: Reader,
    unnamed: bool = Query(default=False, description="only photos with a box nobody named"),
    max_score: float | None = Query(default=None, ge=-1e6, le=1e6, description="only photos with a detector box scoring below this"),
    offset: Count = 0,
    limit: int = Query(default=60, ge=1, le=500),
) -> dict[str, Any]:
    return _boxes(ctx).photos(unnamed=unnamed, max_score=max_score, offset=offset, limit=limit)


@router.post("/undo", summary="Undo your last action (a box revision or a label action)")
def undo(ctx: Ctx, user: Writer) -> dict[str, Any]:
    res = ctx.labels.store.undo(user=user.name)
    return {"event_id": int(res.event_id), "version": int(res.version), "conflicts": int(res.conflicts)}


@router.post("/redo", summary="Redo your last undone action")
def redo(ctx: Ctx, user: Writer) -> dict[str, Any]:
    res = ctx.labels.store.redo(user=user.name)
    return {"event_id": int(res.event_id), "version": int(res.version), "conflicts": int(res.conflicts)}


@router.get("/{photo_id}", summary="One photo's boxes, each with its label (or the photo of a box)")
def photo(photo_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    """``photo_id`` may also be a box's (crop's) id: the answer is then its photo, with ``focus`` on it."""
    svc = _boxes(ctx)
    state = svc.state()
    check_item_id(photo_id)
    if photo_id not in state.photos:
        box = state.box(photo_id)
        if box is not None:
            return svc.photo_json(svc.photo(box.parent)) | {"focus": photo_id}
    return svc.photo_json(svc.photo(photo_id))


@router.get("/{photo_id}/history", summary="Every box revision of the photo: who, when, what, and whether it holds")
def history(photo_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    svc = _boxes(ctx)
    svc.photo(check_item_id(photo_id))
    return {"photo": photo_id, "history": svc.history(photo_id)}


@router.post("/{photo_id}/boxes/{box_id}/delete", summary="Delete a box: not an object (the crop leaves the map, kept as a negative)")
def delete(photo_id: str, box_id: str, body: Revision, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return _boxes(ctx).delete(check_item_id(photo_id), check_item_id(box_id), user=user.name, base=body.base)


@router.post("/{photo_id}/boxes/{box_id}/adjust", summary="Move a box's edges: the crop is cut again, embedded and placed, keeping its label")
def adjust(photo_id: str, box_id: str, body: BoxBody, ctx: Ctx, user: Writer) -> dict[str, Any]:
    svc = _boxes(ctx)
    photo_id, box_id = check_item_id(photo_id), check_item_id(box_id)
    p = svc.photo(photo_id)
    svc._check_base(p, body.base)
    if box_id not in p.boxes:
        raise NotFound(f"photo {photo_id} has no box {box_id!r} now (deleted or replaced meanwhile?)")
    return svc.adjust(photo_id, box_id, body.bbox, user=user.name, base=body.base, clip=body.clip, data=_photo_bytes(ctx, photo_id))


@router.post("/{photo_id}/boxes", summary="Draw a box the detector missed: embedded and placed at once, named when a label is given")
def draw(photo_id: str, body: DrawBody, ctx: Ctx, user: Writer) -> dict[str, Any]:
    svc = _boxes(ctx)
    photo_id = check_item_id(photo_id)
    p = svc.photo(photo_id)
    svc._check_base(p, body.base)
    out = svc.draw(photo_id, body.bbox, user=user.name, base=body.base, clip=body.clip, data=_photo_bytes(ctx, photo_id), label=body.label or None)
    if not body.label:
        from corral.api.routes.suggest import _recognizer

        out["suggestion"] = svc.suggest(out["box"], _recognizer(ctx))
    return out


@router.get("/{photo_id}/boxes/{box_id}/suggest", summary="A name for a box: the recognition index's, else the nearest named box's")
def suggest(photo_id: str, box_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    from corral.api.routes.suggest import _recognizer

    svc = _boxes(ctx)
    p = svc.photo(check_item_id(photo_id))
    if check_item_id(box_id) not in p.boxes:
        raise NotFound(f"photo {photo_id} has no box {box_id!r} now")
    return {"box": box_id, "suggestion": svc.suggest(box_id, _recognizer(ctx))}


@router.post("/{photo_id}/boxes/{box_id}/name", summary="Name one box (an ordinary assign action)")
def name(photo_id: str, box_id: str, body: NameBody, ctx: Ctx, user: Writer) -> dict[str, Any]:
    svc = _boxes(ctx)
    p = svc.photo(check_item_id(photo_id))
    if check_item_id(box_id) not in p.boxes:
        raise NotFound(f"photo {photo_id} has no box {box_id!r} now")
    res = ctx.labels.store.assign([box_id], body.label, user=user.name)
    return {"event_id": int(res.event_id), "version": int(res.version), "photo": svc.photo_json(svc.photo(p.id)), "warnings": list(res.warnings or [])}
