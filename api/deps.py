"""Request dependencies: the app context, the signed-in user and what their role allows.

A request signs in with ``Authorization: Bearer <token>`` (services, scripts) or with the
``corral_session`` cookie, which holds a server-side session id (:mod:`corral.api.sessions`), never
a credential: the viewer signs in once with a name and password (``POST /api/signin``) or a token
(``POST /api/session``, or the single-user link ``/?token=...``) and the cookie then carries
``<img>`` requests and page reloads. Writes
authenticated by the cookie must also send the ``X-Corral-Request`` header, which a page on another
origin cannot add without the server's consent, so a cookie alone never writes.

:func:`identify` reads the credentials once per request; :class:`~corral.api.guard.RequestGuard`
calls it before any body is read, and the dependencies below reuse its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from corral.api.auth import AuthError, User, UserStore
from corral.api.errors import Forbidden, Unauthorized
from corral.api.inputs import Name
from corral.api.itemindex import ItemIndex
from corral.api.mapdata import MapRegistry, MapView
from corral.api.sessions import SessionStore
from corral.api.settings import Settings
from corral.api.thumbs import ThumbCache
from corral.storage.workspace import Workspace

COOKIE = "corral_session"
CSRF_HEADER = "x-corral-request"
#: where :func:`identify` keeps its answer in the ASGI scope
_SCOPE_KEY = "corral.identity"

# The two ways to sign in, as the OpenAPI document names them: every route that needs a user lists
# both, and a role's routes list the permission as the scheme's scope. They read nothing that
# identify() does not; they exist so that the document (and the try-it page's Authorize button)
# says which routes need whom.
BEARER = HTTPBearer(scheme_name="token", bearerFormat="crl_…", description="A user's token: `corral users add NAME --role ROLE`", auto_error=False)
SESSION_COOKIE = APIKeyCookie(name=COOKIE, scheme_name="session", description="The viewer's session cookie (`POST /api/session`); writes also need `X-Corral-Request: 1`", auto_error=False)


@dataclass
class AppContext:
    """Everything the routes share, built once by ``create_app``."""

    settings: Settings
    workspace: Workspace
    users: UserStore
    maps: MapRegistry
    items: ItemIndex
    thumbs: ThumbCache
    labels: Any = None  # corral.api.labelstate.LabelService, opened on first use
    jobs: Any = None  # corral.api.jobs.JobManager
    sessions: SessionStore | None = None  # browser sessions
    oplog: Any = None  # corral.api.oplog.OpLogWriter; None when the workspace cannot hold the log
    signins: Any = None  # corral.api.signin_limit.SignInLimiter
    extra: dict[str, Any] = field(default_factory=dict)


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


@dataclass(frozen=True)
class Identity:
    """Who a request is: its user (None when it sent no credentials or bad ones), whether the
    session cookie signed it in, and what to tell a request that is not signed in."""

    user: User | None
    via_cookie: bool
    problem: str = ""


def identify(conn: HTTPConnection) -> Identity:
    """The request's user from its bearer token or its session cookie (a bearer token wins)."""
    found = conn.scope.get(_SCOPE_KEY)
    if isinstance(found, Identity):
        return found
    ctx = conn.scope["app"].state.ctx
    auth = conn.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        user = ctx.users.authenticate(auth[7:].strip()) if ctx.users is not None else None
        found = Identity(user, False, "" if user else "unknown or revoked token")
    elif sid := conn.cookies.get(COOKIE):
        sessions = getattr(ctx, "sessions", None)
        session = sessions.find(sid) if sessions is not None else None
        user = ctx.users.holder(session.user, session.token_sha256) if session is not None and ctx.users is not None else None
        found = Identity(user, True, "" if user else "the session has ended or expired; sign in again")
    else:
        found = Identity(None, False, "sign in: with a name and password (POST /api/signin, or the viewer's page) or 'Authorization: Bearer <token>' (a user: `corral users add NAME --role ROLE`)")
    conn.scope[_SCOPE_KEY] = found
    return found


def signed_in(scope: Any) -> bool:
    """Whether the request in ``scope`` carries good credentials (for the request guard)."""
    try:
        return identify(HTTPConnection(scope)).user is not None
    except AuthError:  # a broken users file: the route's own dependency reports it
        return False


def current_user(
    request: Request,
    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
    _session: Annotated[str | None, Depends(SESSION_COOKIE)] = None,
) -> User:
    """The user the request's token or session belongs to; 401 without a valid one."""
    ident = identify(request)
    if ident.user is None:
        raise Unauthorized(ident.problem)
    request.state.user = ident.user
    request.state.via_cookie = ident.via_cookie
    return ident.user


def require(permission: str) -> Callable[..., User]:
    """A dependency that admits users whose role holds ``permission``."""

    # a default rather than Annotated[...]: the annotation is a string here, and `permission` a local
    def dep(request: Request, user: User = Security(current_user, scopes=[permission])) -> User:  # noqa: B008
        if not user.can(permission):
            raise Forbidden(f"user {user.name!r} has role {user.role!r}, which may not {permission}")
        if request.method not in ("GET", "HEAD", "OPTIONS") and getattr(request.state, "via_cookie", False):
            if request.headers.get(CSRF_HEADER) != "1":
                raise Forbidden(f"cookie-authenticated writes need the header '{CSRF_HEADER}: 1'")
        return user

    dep.__name__ = f"require_{permission}"
    return dep


CurrentUser = Annotated[User, Depends(current_user)]
Reader = Annotated[User, Depends(require("read"))]
Writer = Annotated[User, Depends(require("write"))]
Admin = Annotated[User, Depends(require("admin"))]
Recognizer = Annotated[User, Depends(require("recognize"))]


def map_view(name: Name, ctx: Ctx, user: Annotated[User, Depends(current_user)]) -> MapView:
    """The map named in the path (404 when there is none; 422 for a name no folder can have). The
    token is checked first, so a request without one gets 401 whether the map exists or not and
    map names cannot be probed."""
    return ctx.maps.get(name)


Map = Annotated[MapView, Depends(map_view)]


def label_service(ctx: AppContext):
    """The label service (it opens the label store on first use)."""
    return ctx.labels
