"""Users and sessions: who am I, sign in with a token (cookie), and user management for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from corral.api.auth import AuthError, check_role
from corral.api.deps import COOKIE, Admin, Ctx, CurrentUser
from corral.api.errors import ApiError, Unauthorized

router = APIRouter(prefix="/api", tags=["users"])


class SessionRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    rotate: bool = Field(default=False, description="give an existing user a new token (and this role)")


@router.post("/session", summary="Sign in: check a token and keep it in an HttpOnly cookie")
def session(body: SessionRequest, response: Response, ctx: Ctx) -> dict[str, Any]:
    user = ctx.users.authenticate(body.token)
    if user is None:
        raise Unauthorized("unknown or revoked token")
    response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", secure=ctx.settings.cookie_secure, max_age=30 * 86400, path="/")
    return {"user": user.public()}


@router.delete("/session", summary="Sign out (forget the cookie)")
def logout(response: Response) -> dict[str, Any]:
    response.delete_cookie(COOKIE, path="/")
    return {"ok": True}


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
