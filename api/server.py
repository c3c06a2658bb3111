"""How ``corral serve`` runs the apps under uvicorn: bounded waits for slow clients, no tokens in logs.

uvicorn (h11) bounds the size of a request's headers (16 KiB) and the idle time between two
requests on one connection (``timeout_keep_alive``, 5 s), but not the time a client may take to
send a request's headers: a connection that sends a few bytes, or none, is held forever, and a
thousand of them hold a thousand sockets. :class:`TimedH11Protocol` closes a connection whose
request line and headers have not all arrived ``header_timeout_s`` after it opened (or after the
previous answer on it). The time a *body* may take is bounded by
:class:`~corral.api.guard.RequestGuard` inside the app (408).

:class:`RedactTokens` keeps tokens and session ids out of every log line: the access log writes
each request's full URL, and the single-user link carries ``?token=crl_...``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

#: loggers whose handlers get the redacting filter (the root one holds the CLI's handler)
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")

_SECRETS = (
    (re.compile(r"((?:^|[?&;\s])(?:token|session|access_token)=)[^&\s\"';]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\b(Bearer\s+)[^\s\"',;]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\b(corral_session=)[^\s\"';]+"), r"\1[redacted]"),
    (re.compile(r"\b(crl|crs)_[A-Za-z0-9_-]{8,}"), r"\1_[redacted]"),
)


def redact(text: str) -> str:
    """``text`` with tokens, session ids and bearer credentials replaced by ``[redacted]``."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class RedactTokens(logging.Filter):
    """A handler filter that redacts the message and its arguments (kept as arguments, since
    uvicorn's access formatter unpacks them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


def redact_logs() -> None:
    """Put :class:`RedactTokens` on every handler of the root and uvicorn loggers (once)."""
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(RedactTokens())


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that are slow to send a request's headers."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a whole request line and headers have arrived
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request on this connection gets the same bound

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            logger.debug("closing a connection that sent no complete request in %.0f s", self.header_timeout_s)
            self.transport.close()


def server_config(app: Any, *, host: str, port: int, log_level: str = "info", header_timeout_s: float = 10.0, trusted_proxies: Sequence[str] = ()) -> Any:
    """The uvicorn configuration ``corral serve`` runs ``app`` with. ``trusted_proxies``: addresses
    of reverse proxies whose ``X-Forwarded-Proto`` / ``-For`` headers are believed (so a request
    that reached the proxy over HTTPS counts as HTTPS); none by default."""
    import uvicorn

    protocol = type("CorralH11Protocol", (TimedH11Protocol,), {"header_timeout_s": float(header_timeout_s)})
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        server_header=False,
        timeout_keep_alive=5,
    )
    redact_logs()  # uvicorn has just configured its handlers
    return config


def serve(app: Any, *, host: str, port: int, log_level: str = "info", header_timeout_s: float = 10.0, trusted_proxies: Sequence[str] = ()) -> None:
    """Run ``app`` until interrupted (see :func:`server_config`)."""
    import uvicorn

    uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level, header_timeout_s=header_timeout_s, trusted_proxies=trusted_proxies)).run()
