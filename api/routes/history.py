"""The operation log, as its users read it: your own requests (the viewer's history panel), and
everyone's for admins.

Each entry that produced a label-store event says which, what it was (``event``: kind and label),
whether it is undone now, and whether it is the one your next undo acts on (``next_undo``): the
panel's undo goes through the label store's own per-user undo, so it always reverses your newest
action that is not undone yet.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from corral.api.deps import Ctx, CurrentUser, label_service
from corral.api.errors import ApiError, Forbidden
from corral.api.inputs import Count

router = APIRouter(prefix="/api/operations", tags=["operations"])

#: kinds of label-store events that undo can reverse (corral.storage.events.ACTION_KINDS)
_UNDOABLE = ("assign", "exclude", "unlabel", "rename", "merge", "delete", "import")


@router.get("", summary="Your operations, newest first; admins may ask for anyone's (user=NAME) or everyone's (everyone=true)")
def operations(
    ctx: Ctx,
    user: CurrentUser,
    who: Annotated[str | None, Query(alias="user", max_length=64, description="whose operations (admins only, for someone else)")] = None,
    everyone: Annotated[bool, Query(description="everyone's operations (admins only)")] = False,
    before: Annotated[Count | None, Query(description="operations with ids below this (the next page)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    if (everyone or (who is not None and who != user.name)) and not user.can("admin"):
        raise Forbidden(f"user {user.name!r} has role {user.role!r}, which may read only their own operations")
    if ctx.oplog is None:
        raise ApiError("this server keeps no operation log (the workspace cannot be written)", status=503)
    if not ctx.oplog.flush(2.0):  # your last request is on the page when the log is healthy
        raise ApiError("the operation log is behind (the server log says why); try again", status=503, headers={"Retry-After": "2"})
    name = None if everyone else (who or user.name)
    ops = [op.as_dict() for op in ctx.oplog.log.query(user=name, before=before, limit=limit)]
    next_undo = _annotate(ctx, ops, name) if name is not None else None
    return {"user": name, "operations": ops, "next_undo": next_undo, "more": len(ops) == limit}


def _annotate(ctx: Ctx, ops: list[dict[str, Any]], name: str) -> int | None:
    """Add each entry's label-store event (kind, label, undone) and return the event the user's
    next undo would reverse, when it is on this page."""
    ids = [op["event_id"] for op in ops if op["event_id"]]
    if not ids:
        return None
    store = label_service(ctx).store
    events = store.events(since=min(ids) - 1, limit=100_000, user=name)
    undone: dict[int, bool] = {}
    by_id = {}
    for e in events:
        by_id[e.id] = e
        target = e.payload.get("target") if isinstance(e.payload, dict) else None
        if e.kind in ("undo", "redo") and isinstance(target, int):
            undone[target] = e.kind == "undo"
    actions = [e.id for e in events if e.kind in _UNDOABLE and not undone.get(e.id, False)]
    for op in ops:
        e = by_id.get(op["event_id"]) if op["event_id"] else None
        if e is None:
            continue
        payload = e.payload if isinstance(e.payload, dict) else {}
        op["event"] = {
            "kind": e.kind,
            "label": payload.get("label") or payload.get("new") or payload.get("into") or payload.get("name"),
            "target": payload.get("target"),
            "undone": undone.get(e.id, False) if e.kind in _UNDOABLE else None,
        }
    return max(actions) if actions else None
