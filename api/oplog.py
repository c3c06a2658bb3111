"""Every request that changes something, and every one that fails, goes to the operation log.

:class:`OperationRecorder` wraps the whole app as plain ASGI, the request guard's early answers
included. After the answer has been sent it notes one :class:`~corral.storage.oplog.Operation`
for each request whose method writes (POST, PUT, PATCH, DELETE; less the routes that only read
with a body, :data:`corral.api.openapi.READS`) and for each answer of 400 or more, whatever its
method: who (the signed-in user), the route, the status and outcome, the items
touched and the label-store event produced (read from the answer's ``event_id`` and
``changed_items``, which every label action carries, or noted by the route with :func:`note`),
and for a failure its short error message.

Nothing waits for the log. Operations go to a queue that :class:`OpLogWriter` writes in batches on
a thread of its own, which also reads the answers (so a large one costs the event loop nothing); a label action is acknowledged before its row is written, and a log that
cannot be written (a full disk, a locked file) costs the action nothing: the writer says so in the
server log, keeps the rows and tries again, and drops the oldest, counted, only past
``max_pending``.
"""

from __future__ import annotations

import gzip
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.storage.oplog import Operation, OperationLog, outcome_of

logger = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: where a route's notes wait in the ASGI scope
_NOTE_KEY = "corral.oplog"
#: seconds between two warnings that the log cannot be written (the writer retries every retry_s)
WARN_EVERY_S = 60.0
#: largest answer read for its event id and item count (label actions answer in kilobytes)
_MAX_PARSED = 4 << 20


def note(conn: HTTPConnection, **fields: Any) -> None:
    """Let a route say what the log should record of its request: ``user`` (who it concerns, when
    nobody is signed in, as for a sign-in), ``items``, ``event_id``, ``detail``."""
    conn.scope.setdefault(_NOTE_KEY, {}).update(fields)


class OpLogWriter:
    """Writes queued operations to an :class:`OperationLog` on its own thread, in batches."""

    def __init__(self, log: OperationLog, *, max_pending: int = 100_000, retry_s: float = 1.0, gather_s: float = 0.05):
        self.log = log
        self.gather_s = gather_s
        self.max_pending = max_pending
        self.retry_s = retry_s
        self._q: queue.SimpleQueue[Operation | Pending | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._queued = 0  # operations handed in
        self._done = 0  # operations written or dropped
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-oplog", daemon=True)
        self._thread.start()

    def put(self, op: Operation | Pending) -> None:
        """Hand in an operation (or a request's :class:`Pending` record, finished on the writer's
        thread, so that reading the answer costs the server's event loop nothing)."""
        if self._closed:  # after the server's shutdown (a test's second client): write at once
            try:
                self.log.append([_finished(op)])
            except Exception as e:
                logger.warning("could not write an operation to the operation log (%s)", e)
            return
        with self._cond:
            self._queued += 1
        self._q.put(op)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything handed in so far is written; False on timeout (the log is failing)."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush(timeout_s)
        self._q.put(None)
        self._thread.join(timeout_s)
        self.log.close()

    def _run(self) -> None:
        pending: list[Operation] = []
        stop = False
        failures, said_at = 0, float("-inf")
        while not stop or pending:
            if not stop:
                try:
                    item = self._q.get(timeout=self.retry_s if pending else None)
                    items = [item]
                    if item is not None and self.gather_s > 0:
                        time.sleep(self.gather_s)  # let a burst gather: one transaction for many rows
                    while len(items) < 1000:
                        try:
                            items.append(self._q.get_nowait())
                        except queue.Empty:
                            break
                except queue.Empty:
                    items = []
                stop = None in items
                pending += [_finished(op) for op in items if op is not None]
            if not pending:
                continue
            try:
                self.log.append(pending)
            except Exception as e:  # the action is done and answered; only its log row waits
                failures += 1
                if time.monotonic() - said_at >= WARN_EVERY_S:  # once a minute while it lasts, not once a retry
                    said_at = time.monotonic()
                    logger.warning("could not write %d operations to the operation log (%s); keeping them and trying again", len(pending), e)
                if len(pending) > self.max_pending:
                    drop = len(pending) - self.max_pending
                    self.dropped += drop
                    logger.error("the operation log is failing: %d oldest operations dropped (%d so far)", drop, self.dropped)
                    pending = pending[drop:]
                    self._finished(drop)
                if stop:
                    logger.error("the server stops: %d operations could not be logged", len(pending))
                    self._finished(len(pending))
                    return
                time.sleep(self.retry_s)
                continue
            if failures:
                logger.warning("the operation log is written again (%d operations, after %d failed tries)", len(pending), failures)
                failures, said_at = 0, float("-inf")
            self._finished(len(pending))
            pending = []

    def _finished(self, n: int) -> None:
        with self._cond:
            self._done += n
            self._cond.notify_all()


class OperationRecorder:
    """ASGI middleware that hands each write and each failure to the app's :class:`OpLogWriter`
    (``app.state.ctx.oplog``; nothing is recorded while that is None)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        writer: OpLogWriter | None = getattr(ctx, "oplog", None)
        if scope["type"] != "http" or writer is None:
            await self.app(scope, receive, send)
            return
        status = 500
        writes = scope["method"] in WRITES
        json_answer = gzipped = False
        body = bytearray()

        async def watch(msg: Message) -> None:
            nonlocal status, json_answer, gzipped
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
                headers = {k.lower(): v for k, v in msg.get("headers", ())}
                json_answer = headers.get(b"content-type", b"").startswith(b"application/json")
                gzipped = headers.get(b"content-encoding") == b"gzip"
                json_answer = json_answer and headers.get(b"content-encoding", b"gzip") == b"gzip"
            elif msg["type"] == "http.response.body" and json_answer and (writes or status >= 400) and len(body) < _MAX_PARSED:
                body.extend(msg.get("body", b""))
            await send(msg)

        at = time.time()
        try:
            await self.app(scope, receive, watch)
        finally:
            if status >= 400 or (writes and not _reads_only(scope)):
                try:
                    writer.put(_pending(scope, at, status, bytes(body), gzipped))
                except Exception:  # the log must never cost the request
                    logger.exception("could not note an operation of %s %s", scope.get("method"), scope.get("path"))


@dataclass(frozen=True)
class Pending:
    """What the recorder knows of a request when its answer has gone: the operation, less what
    the answer's body says (read on the writer's thread by :func:`_finished`)."""

    op: Operation
    notes: dict[str, Any]
    body: bytes
    gzipped: bool


def _pending(scope: Scope, at: float, status: int, body: bytes, gzipped: bool) -> Pending:
    notes: dict[str, Any] = dict(scope.get(_NOTE_KEY) or {})
    client = scope.get("client")
    op = Operation(
        at=at,
        user=str(notes["user"]) if "user" in notes else _user_of(scope),
        method=str(scope.get("method", "")),
        route=_template(scope),
        path=str(scope.get("path", ""))[:300],
        status=status,
        outcome=outcome_of(status),
        client=str(client[0]) if client else "",
    )
    return Pending(op, notes, body, gzipped)


def _finished(p: Operation | Pending) -> Operation:
    """The operation, with the items, event and detail that the route noted or its answer says."""
    if isinstance(p, Operation):
        return p
    answer: dict[str, Any] = {}
    body = _unzipped(p.body) if p.gzipped else p.body
    if body:
        try:
            parsed = json.loads(body)
            answer = parsed if isinstance(parsed, dict) else {}
        except (ValueError, RecursionError):  # not JSON after all: the operation is logged without it
            pass
    notes, failed = p.notes, p.op.status >= 400
    detail = str(notes.get("detail") or (answer.get("error") if failed else answer.get("kind")) or "")
    items = notes.get("items", answer.get("changed_items"))
    event_id = notes.get("event_id", answer.get("event_id"))
    return replace(
        p.op,
        items=int(items) if isinstance(items, int) and not isinstance(items, bool) else None,
        event_id=int(event_id) if isinstance(event_id, int) and not isinstance(event_id, bool) else None,
        detail=detail[:500],
    )


def _reads_only(scope: Scope) -> bool:
    """Whether the request went to a route that takes a body but changes nothing (the points of a
    selection, a split's preview, recognition): those are reads, logged only when they fail."""
    from corral.api.openapi import READS

    return f"{scope.get('method')} {_template(scope)}" in READS


def _template(scope: Scope) -> str:
    """The path template of the route the request went to, or would have gone to had it not been
    refused before routing (the request guard's answers)."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "") or "(no route)")
    from starlette.routing import Match

    probe = {**scope, "type": "http"}
    for r in getattr(scope.get("app"), "routes", ()):
        for candidate in r.effective_route_contexts() if hasattr(r, "effective_route_contexts") else (r,):
            try:
                match, _ = candidate.matches(probe)
            except Exception:  # a route that cannot judge this scope: not this one
                continue
            if match == Match.FULL:
                return str(getattr(candidate, "path", "") or "(no route)")
    return "(no route)"


def _unzipped(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except (OSError, EOFError):  # cut short at _MAX_PARSED: nothing to read from it
        return b""


def _user_of(scope: Scope) -> str:
    from corral.api.deps import identify

    try:
        user = identify(HTTPConnection(scope)).user
    except Exception:  # a broken users file: the operation is still logged, without a name
        return ""
    return user.name if user is not None else ""
