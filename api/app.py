"""The web app: the viewer at ``/``, the API under ``/api``, OpenAPI at ``/docs``.

``create_app(settings)`` builds everything from one :class:`~corral.api.settings.Settings`; nothing
happens at import time. Routes live one module per resource in :mod:`corral.api.routes`.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from corral.api.auth import UserStore
from corral.api.decodebudget import DecodeBudget
from corral.api.deps import AppContext, signed_in
from corral.api.docs import mount_docs
from corral.api.errors import install_error_handlers
from corral.api.guard import RequestGuard
from corral.api.headers import SecurityHeaders
from corral.api.itemindex import ItemIndex
from corral.api.jobs import JobManager
from corral.api.boxes import BoxService
from corral.api.labelstate import LabelService
from corral.api.mapdata import MapRegistry
from corral.api.openapi import install_openapi
from corral.api.oplog import OperationRecorder, OpLogWriter
from corral.api.sessions import SessionStore
from corral.api.settings import Settings
from corral.api.signin_limit import SignInLimiter
from corral.api.thumbs import ThumbCache
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)


#: Route modules under api/routes, one per resource; each exposes ``router``.
ROUTE_MODULES = ("maps", "suggest", "items", "labels", "learn", "events", "jobs", "users", "history", "recognize", "photos")

#: routes whose bodies are uploads and get ``max_request_bytes``; every other body gets ``max_body_bytes``
UPLOAD_ROUTES = (("POST", "/api/recognize"),)
#: routes that take a body without a sign-in (the sign-in itself), and their small limit
PUBLIC_BODY_ROUTES = {("POST", "/api/session"): 4096, ("POST", "/api/signin"): 4096}


def viewer_dir() -> Path:
    """Where the built viewer lives (inside the installed ``corral.viewer`` package)."""
    import corral.viewer

    # __path__ rather than __file__: an editable install made before viewer/__init__.py existed
    # sees a namespace package.
    return Path(next(iter(corral.viewer.__path__))).resolve()


def create_app(settings: Settings, *, users: UserStore | None = None) -> FastAPI:
    """Build the app for one workspace; ``users`` is the workspace's user store when the caller
    already holds one (``corral serve`` keeps a read-only workspace's local user in memory there)."""
    ws = Workspace(settings.workspace)
    items = ItemIndex(ws)
    # one budget for every image this server decodes (thumbnails, crops' parents, recognition uploads)
    decodes = DecodeBudget(settings.decode_memory_bytes, wait_s=settings.decode_wait_s)
    ctx = AppContext(
        settings=settings,
        workspace=ws,
        users=users if users is not None else UserStore(ws.root),
        maps=MapRegistry(ws),
        items=items,
        thumbs=ThumbCache(ws, items, thumb_size=settings.thumb_size, budget=decodes, max_pixels=settings.max_image_pixels),
        labels=LabelService(ws, labels=settings.labels),
        jobs=JobManager(ws, source_roots=settings.source_roots, allow_any_source=settings.allow_any_source, max_jobs=settings.max_jobs),
        sessions=SessionStore(ws.root, idle_s=settings.session_idle_days * 86400, max_s=settings.session_max_days * 86400),
        oplog=_open_oplog(ws),
        signins=SignInLimiter(),
        extra={"decodes": decodes},  # the recognition service decodes uploads within it too
    )
    # detector boxes a curator deleted or replaced leave every map (corral.api.boxes)
    ctx.extra["boxes"] = BoxService(ws, ctx.labels)
    ctx.maps.hidden = ctx.extra["boxes"].hidden

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.warm_split:
            threading.Thread(target=_warm_split, name="corral-warm-split", daemon=True).start()
        yield
        ctx.jobs.shutdown()
        ctx.labels.close()
        if ctx.oplog is not None:
            ctx.oplog.close()

    app = FastAPI(
        title="Corral",
        summary="Curate image collections by cluster: map data, thumbnails, label actions, jobs.",
        version=_version(),
        docs_url=None,  # mount_docs serves it from this server
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    # nothing reads a body before the guard has checked who sends it, and how much
    app.add_middleware(
        RequestGuard,
        body_limit=settings.max_body_bytes,
        route_limits={**dict.fromkeys(UPLOAD_ROUTES, settings.max_request_bytes), **PUBLIC_BODY_ROUTES},
        public=PUBLIC_BODY_ROUTES,
        body_timeout_s=settings.body_timeout_s,
        signed_in=signed_in,
    )
    # every write and every failure, the guard's refusals included, to the operation log
    app.add_middleware(OperationRecorder)
    # around everything, the guard's own answers included: nosniff everywhere, a CSP on every page
    app.add_middleware(SecurityHeaders)

    import importlib

    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(f"corral.api.routes.{name}").router)

    @app.get("/api/health", tags=["meta"], summary="Liveness (no sign-in needed)")
    def health() -> dict:
        return {"ok": True, "version": _version()}

    @app.get("/api/{rest:path}", include_in_schema=False)
    def no_such_api(rest: str) -> JSONResponse:
        return JSONResponse({"error": f"no API route /api/{rest[:100]}", "status": 404}, status_code=404)

    mount_docs(app)
    install_openapi(app)
    _mount_viewer(app, viewer_dir())
    return app


def _mount_viewer(app: FastAPI, vdir: Path) -> None:
    """The page at ``/``, its modules joined into ``/viewer.js`` (one request instead of 25), and
    the modules themselves under ``/src``. Versioned URLs let browsers cache them for good."""
    import hashlib

    from corral.api.binpack import gzip_bytes
    from corral.api.bundle import build_bundle
    from corral.api.routes.common import IMMUTABLE, REVALIDATE, gzip_response

    bundle = build_bundle(vdir / "src")
    bundle_gz = gzip_bytes(bundle.code.encode(), level=9)
    css_v = hashlib.sha1((vdir / "src" / "viewer.css").read_bytes()).hexdigest()[:16]
    html = (vdir / "index.html").read_text(encoding="utf-8")
    html = html.replace('src="/viewer.js"', f'src="/viewer.js?v={bundle.etag}"').replace('href="/src/viewer.css"', f'href="/src/viewer.css?v={css_v}"')
    page_headers = {"Cache-Control": "no-cache"}  # its CSP and the other security headers: corral.api.headers

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        if "token" not in request.query_params:
            return HTMLResponse(html, headers=page_headers)
        # The single-user link: trade its token for a session once, then send the browser to the
        # same page without it, so the token stays out of the address bar and the history.
        from urllib.parse import urlencode

        from corral.api.routes.users import sign_in

        rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        response = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        if sign_in(request, response, request.app.state.ctx, request.query_params["token"]) is None:
            logger.warning("a sign-in link with an unknown or revoked token was opened")
        return response

    @app.get("/viewer.js", include_in_schema=False)
    def viewer_js(request: Request, v: str | None = None) -> Response:
        return gzip_response(request, bundle_gz, etag=bundle.etag, cache=IMMUTABLE.replace("private", "public") if v == bundle.etag else REVALIDATE, media_type="text/javascript")

    app.mount("/src", StaticFiles(directory=vdir / "src"), name="viewer-src")


def _open_oplog(ws: Workspace) -> OpLogWriter | None:
    """The workspace's operation log and its writer; None (the server runs, unlogged) when the
    workspace cannot hold it, such as a read-only one."""
    import sqlite3

    from corral.storage.oplog import SQLiteOperationLog

    try:
        return OpLogWriter(SQLiteOperationLog.open(ws))
    except (sqlite3.Error, OSError) as e:
        logger.warning("the operation log cannot be opened in %s (%s); requests are not logged", ws.root, e)
        return None


def _warm_split() -> None:
    """Compile the re-clustering code once, off the request path."""
    try:
        from corral.pipeline.recluster import warm_up

        logger.info("re-clustering compiled in %.1fs", warm_up())
    except Exception as e:  # warming is an optimisation: log and carry on
        logger.warning("could not warm up re-clustering: %s", e)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("corral")
    except Exception:
        return "0"
