"""Users and sessions: sign in (a name and password, or a token) for a session cookie, sign out
here or everywhere, who am I, and user management for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from corral.api.auth import MAX_PASSWORD, AuthError, User, check_password, check_role
from corral.api.deps import COOKIE, CSRF_HEADER, Admin, AppContext, Ctx, CurrentUser
from corral.api.errors import ApiError, Forbidden, NotFound, Unauthorized
from corral.api.oplog import note
from corral.api.signin_limit import DEVICE_COOKIE

router = APIRouter(prefix="/api", tags=["users"])

#: how long a browser stays known to the sign-in back-off (see corral.api.signin_limit)
DEVICE_MAX_AGE_S = 365 * 86400


class SessionRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class SignInRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    password: str | None = Field(default=None, max_length=MAX_PASSWORD, description="a password to sign in to the viewer with")
    token: bool = Field(default=True, description="make a token (for services and scripts), shown once in the answer")
    rotate: bool = Field(default=False, description="give an existing user a new token (and this role)")


class UserChange(BaseModel):
    role: str | None = Field(default=None, description="a new role")
    password: str | None = Field(default=None, max_length=MAX_PASSWORD, description="a new password (their sessions made from the old one end)")


class PasswordChange(BaseModel):
    current: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new: str = Field(min_length=1, max_length=MAX_PASSWORD)


def _secure(request: Request, ctx: AppContext) -> bool:
    return ctx.settings.cookie_secure or request.url.scheme == "https"


def _start_session(request: Request, response: Response, ctx: AppContext, user: User, credential: str) -> None:
    assert ctx.sessions is not None
    sid = ctx.sessions.start(user.name, credential)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=_secure(request, ctx), max_age=int(ctx.sessions.max_s), path="/")


def sign_in(request: Request, response: Response, ctx: AppContext, token: str) -> User | None:
    """Exchange a token for a new server-side session and set its cookie on ``response``; None
    (and no cookie) for a bad token. The cookie is ``Secure`` with ``--cookie-secure`` and
    whenever the request came over HTTPS (directly, or through a trusted proxy that said so)."""
    user = ctx.users.authenticate(token)
    if user is None or ctx.sessions is None:
        return None
    _start_session(request, response, ctx, user, ctx.users.credential(user.name, token=token))
    return user


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post(
    "/signin",
    summary="Sign in with a name and password: a session (an HttpOnly cookie holding a random session id); failed attempts back off (429 with Retry-After)",
)
def signin(body: SignInRequest, request: Request, response: Response, ctx: Ctx) -> dict[str, Any]:
    limiter, device = ctx.signins, request.cookies.get(DEVICE_COOKIE)
    address = _client(request)
    wait = limiter.wait_s(body.name, address, device)
    known = ctx.users.get(body.name) is not None
    note(request, user=body.name if known else "", detail="sign-in")
    if wait > 0:
        retry = max(1, int(wait + 0.999))
        raise ApiError(f"too many failed sign-ins; try again in {retry} s", status=429, headers={"Retry-After": str(retry)})
    user = ctx.users.check_password(body.name, body.password)
    if user is None or ctx.sessions is None:
        limiter.failed(body.name, address, device)
        note(request, detail="sign-in: wrong name or password" if known else "sign-in as an unknown name")
        raise Unauthorized("wrong name or password")
    device = limiter.succeeded(user.name, address, device)
    _start_session(request, response, ctx, user, ctx.users.credential(user.name))
    response.set_cookie(DEVICE_COOKIE, device, httponly=True, samesite="strict", secure=_secure(request, ctx), max_age=DEVICE_MAX_AGE_S, path="/api/signin")
    return {"user": user.public()}


@router.post("/session", summary="Sign in with a token: a session (an HttpOnly cookie holding a random session id)")
def session(body: SessionRequest, request: Request, response: Response, ctx: Ctx) -> dict[str, Any]:
    user = sign_in(request, response, ctx, body.token)
    if user is None:
        raise Unauthorized("unknown or revoked token")
    note(request, user=user.name, detail="sign-in with a token")
    return {"user": user.public()}


@router.delete("/session", summary="Sign out: end the session on the server and forget the cookie")
def logout(request: Request, response: Response, ctx: Ctx) -> dict[str, Any]:
    ended = ctx.sessions.end(request.cookies.get(COOKIE)) if ctx.sessions is not None else False
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return {"ok": True, "ended": ended}


@router.delete("/sessions", summary="Sign out everywhere: end every session of the signed-in user (tokens keep working)")
def logout_everywhere(request: Request, response: Response, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    _require_csrf(request)
    ended = ctx.sessions.end_all(user.name) if ctx.sessions is not None else 0
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    note(request, items=ended, detail=f"signed out everywhere ({ended} sessions)")
    return {"ok": True, "ended": ended}


@router.get("/me", summary="The signed-in user and what they may do")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"user": user.public()}


@router.post("/me/password", summary="Change your own password (needs the current one); your other sessions end")
def change_password(body: PasswordChange, request: Request, response: Response, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    _require_csrf(request)
    wait = ctx.signins.wait_s(user.name, _client(request), request.cookies.get(DEVICE_COOKIE))
    if wait > 0:
        retry = max(1, int(wait + 0.999))
        raise ApiError(f"too many failed sign-ins; try again in {retry} s", status=429, headers={"Retry-After": str(retry)})
    if ctx.users.check_password(user.name, body.current) is None:
        ctx.signins.failed(user.name, _client(request), request.cookies.get(DEVICE_COOKIE))
        raise Forbidden("the current password is wrong")
    _set_password(ctx, user.name, body.new)
    if ctx.sessions is not None and getattr(request.state, "via_cookie", False):
        _start_session(request, response, ctx, user, ctx.users.credential(user.name))  # this browser stays signed in
    return {"ok": True}


@router.get("/users", summary="Every user (admins)")
def users(ctx: Ctx, user: Admin) -> dict[str, Any]:
    sessions = ctx.sessions
    return {"users": [{**u.public(), "sessions": sessions.count(u.name) if sessions is not None else 0} for u in ctx.users.users()]}


@router.post("/users", summary="Add a user (admins); the answer holds their token, shown once", status_code=201)
def add_user(body: NewUser, request: Request, ctx: Ctx, user: Admin) -> dict[str, Any]:
    try:
        check_role(body.role)
        token = ctx.users.add(body.name, role=body.role, replace=body.rotate, password=body.password, token=body.token)
    except AuthError as e:
        raise ApiError(str(e)) from None
    note(request, detail=f"user {body.name} ({body.role}) added")
    return {"user": _public(ctx, body.name), "token": token}


@router.patch("/users/{name}", summary="Change a user's role or password (admins)")
def change_user(name: str, body: UserChange, request: Request, ctx: Ctx, user: Admin) -> dict[str, Any]:
    if ctx.users.get(name) is None:
        raise NotFound(f"no user {name!r}")
    if body.role is None and body.password is None:
        raise ApiError("send a role, a password or both")
    if body.role is not None and name == user.name and body.role != "admin":
        raise ApiError("you cannot take the admin role from yourself; ask another admin")
    try:
        if body.role is not None:
            ctx.users.set_role(name, body.role)
        if body.password is not None:
            _set_password(ctx, name, body.password)
    except AuthError as e:
        raise ApiError(str(e)) from None
    done = [f"role {body.role}"] if body.role is not None else []
    note(request, detail=f"user {name}: " + ", ".join([*done, *(["new password"] if body.password is not None else [])]))
    return {"user": _public(ctx, name)}


@router.delete("/users/{name}", summary="Remove a user (admins); their token and sessions stop working at once")
def remove_user(name: str, request: Request, ctx: Ctx, user: Admin) -> dict[str, Any]:
    if name == user.name:
        raise ApiError("you cannot remove yourself")
    try:
        ctx.users.remove(name)
    except AuthError as e:
        raise ApiError(str(e), status=404) from None
    if ctx.sessions is not None:
        ctx.sessions.end_all(name)
    note(request, detail=f"user {name} removed")
    return {"ok": True}


def _set_password(ctx: AppContext, name: str, password: str) -> None:
    try:
        check_password(password, name)
        ctx.users.set_password(name, password)
    except AuthError as e:
        raise ApiError(str(e)) from None
    if ctx.sessions is not None:
        ctx.sessions.end_all(name)


def _public(ctx: AppContext, name: str) -> dict[str, Any]:
    found = ctx.users.get(name)
    if found is None:
        raise NotFound(f"no user {name!r}")
    return found.public()


def _require_csrf(request: Request) -> None:
    """A write signed in by the cookie must carry the header a page elsewhere cannot add."""
    if getattr(request.state, "via_cookie", False) and request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"cookie-authenticated writes need the header '{CSRF_HEADER}: 1'")
