"""Domain errors and the one place that turns them into HTTP answers.

Every error body is ``{"error": "<short message>", "status": <code>}``; tracebacks go to the
server log only. A message may name a server path (a store that cannot be written, a folder that
is missing): only curators and admins get it as written, everyone else gets the path's last part
(:mod:`corral.api.redact`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused; ``status`` is its HTTP code."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})  # what the answer must carry, such as a 503's Retry-After


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The client acted on an outdated view (for example a map that has been rebuilt)."""

    status = 409


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


def _body(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers or None)


def _domain_errors() -> dict[type[Exception], int]:
    """Errors of ``storage`` and ``pipeline`` that mean bad input, with their HTTP codes."""
    from corral.api.auth import AuthError
    from corral.storage.events import LabelError, LabelStoreUnavailable
    from corral.storage.workspace import WorkspaceError

    from corral.storage.diskerrors import WorkspaceFull, WorkspaceReadOnly

    # a full disk is 507 Insufficient Storage; a read-only workspace is 503: the server, not the
    # request, is what cannot write, and the same request works once the workspace is writable
    # the label store's database server being down is the server's trouble too, and passes
    out: dict[type[Exception], int] = {LabelError: 400, WorkspaceError: 404, AuthError: 400, WorkspaceFull: 507, WorkspaceReadOnly: 503, LabelStoreUnavailable: 503}
    try:
        from corral.pipeline.ingest import SourceError

        out[SourceError] = 400
    except ImportError:  # pragma: no cover - pipeline without its optional parts
        pass
    return out


def _for_requester(request: Request, message: str) -> str:
    """``message`` as the request's user may read it: server paths only for those who start jobs."""
    from corral.api.deps import identify
    from corral.api.redact import hide_paths, sees_paths

    try:
        user = identify(request).user
    except Exception:  # a broken users file: nobody is known to see paths
        user = None
    return message if user is not None and sees_paths(user) else hide_paths(message)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a short JSON answer."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _body(_for_requester(request, str(exc)), exc.status, getattr(exc, "headers", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _body(_for_requester(request, msg), exc.status_code, exc.headers)  # keeps what the answer needs, such as a 405's Allow

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # our validators' own words
            parts.append(f"{loc}: {msg}" if loc else msg)
        return _body("invalid request: " + "; ".join(parts), 422)

    for cls, status in _domain_errors().items():

        async def _domain(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            text = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
            return _body(_for_requester(request, text), status)

        app.add_exception_handler(cls, _domain)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from corral.storage.diskerrors import WorkspaceFull, write_problem

        problem = write_problem(exc)  # a write that failed anywhere on a full or read-only disk
        if problem is not None:
            logger.warning("%s %s: %s (%s: %s)", request.method, request.url.path, problem, type(exc).__name__, exc)
            return _body(_for_requester(request, str(problem)), 507 if isinstance(problem, WorkspaceFull) else 503)
        ref = uuid.uuid4().hex[:12]
        logger.exception("unhandled error %s on %s %s", ref, request.method, request.url.path)
        return _body(f"internal error (reference {ref}; see the server log)", 500)
