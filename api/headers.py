"""The security headers every answer carries, set in one place.

:class:`SecurityHeaders` wraps the whole app (the request guard's early 401/413 answers included):

- every answer gets ``X-Content-Type-Options: nosniff``, so a browser never runs a JSON error, a
  thumbnail or an original as a script or a page;
- every HTML page gets :data:`CSP` and ``Referrer-Policy: no-referrer`` unless its route set a
  policy of its own: the viewer and the API's try-it page (``/docs``) alike load scripts, styles and
  images only from this server, never from another site, and run no inline script.

A page added later is covered without remembering to: the middleware looks at the answer's
``Content-Type``, not at its path.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Content-Security-Policy of every HTML page: scripts only from this server (no inline ones, no
#: eval), connections only back to it, images from it or made in the page (blobs, data: URLs), the
#: page never framed by another site. Inline styles stay allowed: the viewer sets element styles.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "worker-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: headers of every answer, and the ones an HTML page adds
ALWAYS = ((b"x-content-type-options", b"nosniff"),)
PAGE = ((b"content-security-policy", CSP.encode()), (b"referrer-policy", b"no-referrer"))


class SecurityHeaders:
    """ASGI middleware that adds :data:`ALWAYS` to every HTTP answer and :data:`PAGE` to HTML ones
    (a header the route set itself is kept)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", ()))
                have = {name.lower() for name, _ in headers}
                ctype = next((value for name, value in headers if name.lower() == b"content-type"), b"")
                extra = ALWAYS + (PAGE if ctype.split(b";")[0].strip().lower() == b"text/html" else ())
                headers += [(name, value) for name, value in extra if name not in have]
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, send_with_headers)
