"""The gate every HTTP request passes before a route reads its body.

FastAPI reads and parses a route's JSON body before it resolves the route's dependencies, so a
token checked by a dependency is checked only after the whole body has arrived and been parsed on
the event loop: an unauthenticated 61 MB body took 7 s to earn its 401 while ``/api/health``
waited. :class:`RequestGuard` sits in front of the app, as plain ASGI, and for every request that
carries a body:

1. refuses it with 401 unless it is signed in (or the route is public, like the sign-in itself),
   before a byte of the body is read;
2. refuses a body over the route's limit with 413: at once when ``Content-Length`` says so, or as
   soon as a chunked body passes it (label actions need kilobytes; only uploads get megabytes);
3. gives the whole body a deadline: one that has not arrived in ``body_timeout_s`` gets 408.

An answer sent before the body was read to its end closes the connection, so the server does not
go on reading (and discarding) the rest of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: (method, path) of a route
Route = tuple[str, str]


class RequestGuard:
    """Authenticate, size and time request bodies before the app reads them (see the module
    docstring). ``signed_in(scope)`` says whether the request's credentials are good; ``None``
    means the app has no sign-in (a recognise-only service without users)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int,
        route_limits: Mapping[Route, int] | None = None,
        public: Collection[Route] = (),
        body_timeout_s: float = 60.0,
        signed_in: Callable[[Scope], bool] | None = None,
    ):
        self.app = app
        self.body_limit = body_limit
        self.route_limits = dict(route_limits or {})
        self.public = frozenset(public)
        self.body_timeout_s = body_timeout_s
        self.signed_in = signed_in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared_length(scope)
        if not chunked and not length:
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        route = (scope["method"], scope["path"])
        if self.signed_in is not None and route not in self.public and not self.signed_in(scope):
            await send_error(send, 401, "sign in before sending a body: 'Authorization: Bearer <token>' or the session cookie", close=True)
            return
        limit = self.route_limits.get(route, self.body_limit)
        too_large = f"request body over the limit of {limit:,} bytes for {scope['method']} {scope['path'][:100]}"
        if length is not None and length > limit:
            await send_error(send, 413, too_large, close=True)
            return
        await self._guarded(scope, receive, send, limit=limit, too_large=too_large)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, *, limit: int, too_large: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        seen = 0
        body_done = False
        started = False

        async def receive_body() -> Message:
            nonlocal seen, body_done
            if body_done:  # after the body only http.disconnect comes, which a stream may wait for
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.body_timeout_s:g} s") from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, too_large)
                body_done = not msg.get("more_body", False)
            return msg

        async def send_closing(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                if not body_done:  # the rest of the body is not worth reading: close after the answer
                    msg = {**msg, "headers": [*msg.get("headers", ()), (b"connection", b"close")]}
            await send(msg)

        try:
            await self.app(scope, receive_body, send_closing)
        except HTTPException as e:  # raised where no exception handler of the app saw it
            if started or e.status_code not in (408, 413):
                raise
            await send_error(send, e.status_code, str(e.detail), close=True)


def _declared_length(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked)."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


async def send_error(send: Send, status: int, message: str, *, close: bool = False) -> None:
    """Answer with the app's short JSON error body (``{"error": ..., "status": ...}``)."""
    body = json.dumps({"error": message, "status": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
