"""The label store's events: a page of them (audit), and a stream that says when a new one lands.

The viewer listens to ``/api/events/stream`` (server-sent events) and, on each ``version``
message, asks ``/api/maps/{name}/changes?since=...`` for the points that changed. The stream
closes itself after ``timeout`` seconds; EventSource reconnects on its own. With the label store in
PostgreSQL an action committed by any server on the database wakes every stream at once (NOTIFY);
with SQLite the stream looks every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, is_dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.api.deps import Ctx, Reader, label_service
from corral.api.inputs import Count

router = APIRouter(prefix="/api/events", tags=["events"])


def _event_json(e: Any, *, max_list: int = 20) -> dict[str, Any]:
    """An event as JSON, with long item lists in its payload cut to ``max_list`` (+ their length)."""
    d = asdict(e) if is_dataclass(e) and not isinstance(e, type) else dict(vars(e))
    payload = dict(d.get("payload") or {})
    for k, v in list(payload.items()):
        if isinstance(v, list) and len(v) > max_list:
            payload[k] = v[:max_list]
            payload[f"{k}_count"] = len(v)
    d["payload"] = payload
    return json.loads(json.dumps(d, default=str))


@router.get("", summary="Events after a version, oldest first (who, when, what, how many items)")
def events(ctx: Ctx, user: Reader, since: Count = 0, limit: int = Query(default=200, ge=1, le=1000)) -> dict[str, Any]:
    evs, version = label_service(ctx).events(since=since, limit=limit)
    return {"version": version, "events": [_event_json(e) for e in evs]}


@router.get("/stream", summary="Server-sent events: one 'version' message whenever the labels change")
async def stream(request: Request, ctx: Ctx, user: Reader, since: Count | None = None, timeout: float = Query(default=25.0, gt=0, le=300), interval: float = Query(default=0.5, ge=0.05, le=10)):
    svc = label_service(ctx)

    def current() -> int:
        return int(svc.store.version())

    async def gen():
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        last = since
        yield "retry: 1000\n\n"
        while loop.time() < end:
            if await request.is_disconnected():
                return
            v = await run_in_threadpool(current)
            if v != last:
                last = v
                yield f"event: version\ndata: {json.dumps({'version': v})}\n\n"
            await svc.wait_for_change(interval, seen=v)  # at once when another server's action is pushed
        yield ": bye\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
