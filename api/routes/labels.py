"""Labels and label actions.

Each action is one event of the label store, committed before the answer is sent. Every answer
carries the store ``version`` and the points of the map that changed since the ``since`` version
the client sent (its own action's and anyone else's), so the viewer applies them and stays equal
to the server; ``full: true`` asks it to reload the whole label array instead. Label names are
folded by the store (NFKC, Unicode spaces made plain): ``ｃａｔ`` and ``cat`` + no-break space find
the label ``cat``. A new name that only looks like another label's (Cyrillic ``саt`` beside
``cat``) is accepted, and the answer's ``warnings`` says which label it looks like.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from corral.api.deps import Ctx, Map, Reader, Writer, label_service
from corral.api.errors import ApiError
from corral.api.inputs import Count, Index, Points
from corral.api.routes.common import REVALIDATE, gzip_response

router = APIRouter(tags=["labels"])


class ActionBase(BaseModel):
    since: Count | None = Field(default=None, description="the store version the client shows; the answer lists changes after it")
    etag: str | None = Field(default=None, description="the map version the point indices refer to")
    duration_ms: int | None = Field(default=None, ge=0, le=86_400_000, description="how long the curator took (recorded in the event)")


class AssignBody(ActionBase):
    indices: Points
    exclude: list[Index] = Field(default_factory=list, description="points of the selection that are not this label")
    label: str = Field(description="the name; an existing label is matched case-insensitively after NFKC and space folding")


class ExcludeBody(ActionBase):
    indices: Points
    label: str


class UnlabelBody(ActionBase):
    indices: Points


class RenameBody(ActionBase):
    old: str
    new: str


class MergeBody(ActionBase):
    sources: list[str] = Field(min_length=1)
    into: str


class DeleteBody(ActionBase):
    name: str


@router.get("/api/labels", summary="Every label with its item count")
def labels(ctx: Ctx, user: Reader) -> dict[str, Any]:
    svc = label_service(ctx)
    return {"version": int(svc.store.version()), "labels": svc.labels()}


@router.get("/api/maps/{name}/labels.bin", summary="The label of every point, packed (CRL1, gzip)")
def labels_bin(request: Request, view: Map, ctx: Ctx, user: Reader):
    body, version = label_service(ctx).blob(view)
    return gzip_response(request, body, etag=f"{view.etag}-{version}", cache=REVALIDATE)


@router.get("/api/maps/{name}/changes", summary="Points whose label changed after a version (poll this)")
def changes(view: Map, ctx: Ctx, user: Reader, since: Count | None = None) -> dict[str, Any]:
    return label_service(ctx).changes(view, since)


def _check_selection(view, indices: list[int], exclude: list[int] | None = None):
    idx = view.check_indices(indices)
    if idx.size == 0:
        raise ApiError("indices: the selection is empty; select some points first")
    ex = view.check_indices(exclude or [], what="exclude")
    return idx, ex


@router.post("/api/maps/{name}/actions/assign", summary="Name a selection (minus exclusions) in one action")
def assign(body: AssignBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx, ex = _check_selection(view, body.indices, body.exclude)
    ids, ex_ids = view.ids_at(idx), view.ids_at(ex)
    return label_service(ctx).act(view, lambda s: s.assign(ids, body.label, user=user.name, exclude=ex_ids, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/exclude", summary="Mark points as not belonging to a label")
def exclude(body: ExcludeBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx, _ = _check_selection(view, body.indices)
    ids = view.ids_at(idx)
    return label_service(ctx).act(view, lambda s: s.exclude(ids, body.label, user=user.name, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/unlabel", summary="Remove the labels of points")
def unlabel(body: UnlabelBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    view.require_etag(body.etag)
    idx, _ = _check_selection(view, body.indices)
    ids = view.ids_at(idx)
    return label_service(ctx).act(view, lambda s: s.unlabel(ids, user=user.name, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/rename", summary="Rename a label (the old name stays as an alias)")
def rename(body: RenameBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return label_service(ctx).act(view, lambda s: s.rename_label(body.old, body.new, user=user.name, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/merge", summary="Merge labels into one")
def merge(body: MergeBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return label_service(ctx).act(view, lambda s: s.merge_labels(list(body.sources), body.into, user=user.name, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/delete", summary="Remove a label (its items become unlabelled)")
def delete(body: DeleteBody, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return label_service(ctx).act(view, lambda s: s.delete_label(body.name, user=user.name, duration_ms=body.duration_ms), since=body.since)


@router.post("/api/maps/{name}/actions/undo", summary="Undo your last action")
def undo(body: ActionBase, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return label_service(ctx).act(view, lambda s: s.undo(user=user.name), since=body.since)


@router.post("/api/maps/{name}/actions/redo", summary="Redo your last undone action")
def redo(body: ActionBase, view: Map, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return label_service(ctx).act(view, lambda s: s.redo(user=user.name), since=body.since)
