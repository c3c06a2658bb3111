"""Users and sessions: who am I, sign in with a token (a session cookie), sign out, and user management for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from corral.api.auth import AuthError, User, check_role, hash_token
from corral.api.deps import COOKIE, Admin, AppContext, Ctx, CurrentUser
from corral.api.errors import ApiError, Unauthorized

router = APIRouter(prefix="/api", tags=["users"])


class SessionRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    rotate: bool = Field(default=False, description="give an existing user a new token (and this role)")


def sign_in(request: Request, response: Response, ctx: AppContext, token: str) -> User | None:
    """Exchange a token for a new server-side session and set its cookie on ``response``; None
    (and no cookie) for a bad token. The cookie is ``Secure`` with ``--cookie-secure`` and
    whenever the request came over HTTPS (directly, or through a trusted proxy that said so)."""
    user = ctx.users.authenticate(token)
    if user is None or ctx.sessions is None:
        return None
    sid = ctx.sessions.start(user.name, hash_token(token))
    secure = ctx.settings.cookie_secure or request.url.scheme == "https"
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure, max_age=int(ctx.sessions.max_s), path="/")
    return user


@router.post("/session", summary="Sign in: exchange a token for a session (an HttpOnly cookie holding a random session id)")
def session(body: SessionRequest, request: Request, response: Response, ctx: Ctx) -> dict[str, Any]:
    user = sign_in(request, response, ctx, body.token)
    if user is None:
        raise Unauthorized("unknown or revoked token")
    return {"user": user.public()}


@router.delete("/session", summary="Sign out: end the session on the server and forget the cookie")
def logout(request: Request, response: Response, ctx: Ctx) -> dict[str, Any]:
    ended = ctx.sessions.end(request.cookies.get(COOKIE)) if ctx.sessions is not None else False
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return {"ok": True, "ended": ended}


@router.get("/me", summary="The signed-in user and what they may do")
def me(user: CurrentUser) -> dict[str, Any]:
    return {"user": user.public()}


@router.get("/users", summary="Every user (admins)")
def users(ctx: Ctx, user: Admin) -> dict[str, Any]:
    return {"users": [u.public() for u in ctx.users.users()]}


@router.post("/users", summary="Add a user (admins); the answer holds their token, shown once", status_code=201)
def add_user(body: NewUser, ctx: Ctx, user: Admin) -> dict[str, Any]:
    try:
        check_role(body.role)
        token = ctx.users.add(body.name, role=body.role, replace=body.rotate)
    except AuthError as e:
        raise ApiError(str(e)) from None
    return {"user": ctx.users.get(body.name).public(), "token": token}


@router.delete("/users/{name}", summary="Remove a user (admins); their token stops working at once")
def remove_user(name: str, ctx: Ctx, user: Admin) -> dict[str, Any]:
    if name == user.name:
        raise ApiError("you cannot remove yourself")
    try:
        ctx.users.remove(name)
    except AuthError as e:
        raise ApiError(str(e), status=404) from None
    return {"ok": True}
