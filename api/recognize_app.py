"""A web app that only recognises: ``corral serve --recognize-only --from SOURCE``.

It serves ``POST /api/recognize``, ``GET /api/recognize/status`` and ``GET /api/health`` for an
index loaded from a published S3 prefix, a local published folder or a workspace, and swaps in
newer published versions as they appear. Tokens and roles come from a ``users.json``
(``corral users add NAME --role service --workspace DIR``) when one is given; without one the
service answers anyone who can reach it, so it then listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from corral.api.auth import User, UserStore
from corral.api.deps import current_user, signed_in
from corral.api.docs import mount_docs
from corral.api.errors import install_error_handlers
from corral.api.guard import RequestGuard
from corral.api.headers import SecurityHeaders
from corral.api.openapi import install_openapi
from corral.api.recognize_service import RecognitionService
from corral.storage.index_source import IndexSource

logger = logging.getLogger(__name__)


@dataclass
class RecognizeContext:
    """What the shared dependencies (users) and the recognize routes read from ``app.state.ctx``."""

    users: UserStore | None
    settings: Any = None
    workspace: Any = None
    labels: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def create_recognize_app(
    source: IndexSource,
    *,
    users_dir: str | os.PathLike[str] | None = None,
    weights: str | None = None,
    device: str = "auto",
    reload_interval_s: float = 10.0,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_request_bytes: int = 64 * 1024 * 1024,
    max_upload_bytes: int = 32 * 1024 * 1024,
) -> FastAPI:
    """The recognise-only app for one index source (see the module docstring)."""
    svc = RecognitionService(source, weights=weights, device=device, reload_interval_s=reload_interval_s, max_batch=max_batch, max_wait_ms=max_wait_ms)
    users = None
    if users_dir is not None:
        path = Path(users_dir).expanduser().resolve()
        if not (path / UserStore.FILE).is_file():
            raise ValueError(f"--users {users_dir}: no {UserStore.FILE} there; make one with `corral users add NAME --role service --workspace {users_dir}`")
        users = UserStore(path)
    ctx = RecognizeContext(users=users, settings=SimpleNamespace(max_upload_bytes=max_upload_bytes), extra={"recognition": svc})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await svc.start(require_index=True)
        yield
        await svc.close()

    app = FastAPI(title="Corral recognition", summary="Name images or vectors with a published Corral index.", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.ctx = ctx
    install_error_handlers(app)
    # the one upload route gets the large limit; a token is checked before any body is read
    app.add_middleware(RequestGuard, body_limit=64 * 1024, route_limits={("POST", "/api/recognize"): max_request_bytes}, signed_in=signed_in if users is not None else None)
    app.add_middleware(SecurityHeaders)
    if users is None:
        app.dependency_overrides[current_user] = lambda: User("anonymous", "service")
    from corral.api.routes.recognize import recognize, recognize_status

    app.add_api_route("/api/recognize", recognize, methods=["POST"], summary="Name images or vectors (top-k labels with scores, or unknown)", tags=["recognize"])
    app.add_api_route("/api/recognize/status", recognize_status, methods=["GET"], summary="The loaded index version and counts", tags=["recognize"])

    @app.get("/api/health", tags=["meta"])
    def health() -> JSONResponse:
        cur = svc.current
        return JSONResponse({"ok": cur is not None, "version": cur.version if cur else None}, status_code=200 if cur else 503)

    mount_docs(app)
    install_openapi(app, route_errors={"GET /api/health": {503: "No index is loaded yet"}})
    return app
