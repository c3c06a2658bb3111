"""Domain errors and the one place that turns them into HTTP answers.

Every error body is ``{"error": "<short message>", "status": <code>}``; tracebacks go to the
server log only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused; ``status`` is its HTTP code."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The client acted on an outdated view (for example a map that has been rebuilt)."""

    status = 409


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class TooLarge(ApiError):
    status = 413


def _body(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers or None)


def _domain_errors() -> dict[type[Exception], int]:
    """Errors of ``storage`` and ``pipeline`` that mean bad input, with their HTTP codes."""
    from corral.api.auth import AuthError
    from corral.storage.events import LabelError
    from corral.storage.workspace import WorkspaceError

    out: dict[type[Exception], int] = {LabelError: 400, WorkspaceError: 404, AuthError: 400}
    try:
        from corral.pipeline.ingest import SourceError

        out[SourceError] = 400
    except ImportError:  # pragma: no cover - pipeline without its optional parts
        pass
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a short JSON answer."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _body(str(exc), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _body(msg, exc.status_code, exc.headers)  # keeps what the answer needs, such as a 405's Allow

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # our validators' own words
            parts.append(f"{loc}: {msg}" if loc else msg)
        return _body("invalid request: " + "; ".join(parts), 422)

    for cls, status in _domain_errors().items():

        async def _domain(_: Request, exc: Exception, status: int = status) -> JSONResponse:
            text = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
            return _body(text, status)

        app.add_exception_handler(cls, _domain)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        logger.exception("unhandled error %s on %s %s", ref, request.method, request.url.path)
        return _body(f"internal error (reference {ref}; see the server log)", 500)


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, *, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_json(send, 413, f"request body over the limit of {self.limit} bytes")
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(f"request body over the limit of {self.limit} bytes")
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge as e:
            if not started:
                await _send_json(send, 413, str(e))


async def _send_json(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
