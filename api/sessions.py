"""Browser sessions: what the viewer's cookie holds instead of the user's long-lived token.

A name and password (``POST /api/signin``, the viewer's sign-in page) or a token (``POST
/api/session``, or the single-user link ``/?token=...``) is exchanged once for a random session id; the cookie carries only that id. Sessions live next to the users, in the
workspace's ``sessions.json``, so a restart of the server does not sign the team out. Like
tokens, ids are kept only as their SHA-256: the file signs nobody in.

A session ends when its user signs out (here, or everywhere at once), when it has not been used
for ``idle_s`` (7 days by default) or is older than ``max_s`` (30 days), and when its user is
removed or given a new token or password (the session remembers which credential it came from). In single-user mode ``corral serve`` makes a
new token each start, so a restart ends the local sessions as well.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.api.auth import hash_token
from corral.storage.workspace import atomic_write_json

logger = logging.getLogger(__name__)

SESSION_PREFIX = "crs_"
#: how stale a session's "last seen" may be on disk (at most a tenth of the idle limit): using a
#: session writes the file at most this often
SEEN_RESOLUTION_S = 3600.0
#: most sessions kept; beyond this the least recently used are dropped (each sign-in makes one)
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    """A live session: whose it is and which of their tokens it was made from."""

    user: str
    token_sha256: str
    created: float
    seen: float


class SessionStore:
    """The sessions of one workspace (see the module docstring)."""

    FILE = "sessions.json"

    def __init__(self, workspace_root: str | Path, *, idle_s: float = 7 * 86400, max_s: float = 30 * 86400, clock: Callable[[], float] = time.time):
        self.path = Path(workspace_root) / self.FILE
        self.clock = clock
        self.idle_s = float(idle_s)
        self.max_s = float(max_s)
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, Any]] | None = None  # sha256(id) -> record, loaded on first use

    def start(self, user: str, token_sha256: str) -> str:
        """A new session for ``user``, made from the token with hash ``token_sha256``; returns its id."""
        sid = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            sessions = self._load()
            self._prune(sessions, now)
            sessions[hash_token(sid)] = {"user": user, "token_sha256": token_sha256, "created": now, "seen": now}
            if len(sessions) > MAX_SESSIONS:
                for key in sorted(sessions, key=lambda k: sessions[k]["seen"])[: len(sessions) - MAX_SESSIONS]:
                    del sessions[key]
            self._save(sessions)
        logger.info("session started for %s", user)
        return sid

    def find(self, sid: str | None) -> Session | None:
        """The live session with id ``sid`` (its last use noted), or None for an unknown, ended or
        expired one."""
        if not sid or not sid.startswith(SESSION_PREFIX) or len(sid) > 200:
            return None
        key, now = hash_token(sid), self.clock()
        with self._lock:
            sessions = self._load()
            rec = sessions.get(key)
            if rec is None:
                return None
            if self._expired(rec, now):
                del sessions[key]
                self._save(sessions)
                return None
            if now - rec["seen"] > min(SEEN_RESOLUTION_S, self.idle_s / 10):
                rec["seen"] = now
                self._save(sessions)
            return Session(rec["user"], rec["token_sha256"], rec["created"], rec["seen"])

    def end_all(self, user: str) -> int:
        """End every session of ``user`` (sign out everywhere); returns how many ended."""
        with self._lock:
            sessions = self._load()
            keys = [k for k, rec in sessions.items() if rec["user"] == user]
            for key in keys:
                del sessions[key]
            if keys:
                self._save(sessions)
        logger.info("%d sessions of %s ended", len(keys), user)
        return len(keys)

    def count(self, user: str) -> int:
        """How many live sessions ``user`` has."""
        now = self.clock()
        with self._lock:
            return sum(1 for rec in self._load().values() if rec["user"] == user and not self._expired(rec, now))

    def end(self, sid: str | None) -> bool:
        """End a session (sign-out); False when there was none."""
        if not sid:
            return False
        with self._lock:
            sessions = self._load()
            if sessions.pop(hash_token(sid), None) is None:
                return False
            self._save(sessions)
        return True

    # -- the file ---------------------------------------------------------------------------
    def _expired(self, rec: dict[str, Any], now: float) -> bool:
        return now - rec["created"] > self.max_s or now - rec["seen"] > self.idle_s

    def _prune(self, sessions: dict[str, dict[str, Any]], now: float) -> None:
        for key in [k for k, rec in sessions.items() if self._expired(rec, now)]:
            del sessions[key]

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._sessions is None:
            self._sessions = {}
            try:
                data = json.loads(self.path.read_text())
                for key, rec in dict(data.get("sessions", {})).items():
                    if isinstance(rec, dict) and {"user", "token_sha256", "created", "seen"} <= rec.keys():
                        self._sessions[str(key)] = rec
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError) as e:  # a damaged file only signs people out
                logger.warning("%s is unreadable (%s); starting with no sessions", self.path, e)
        return self._sessions

    def _save(self, sessions: dict[str, dict[str, Any]]) -> None:
        try:
            atomic_write_json(self.path, {"format": "corral sessions v1 (ids stored as sha256)", "sessions": sessions})
        except OSError as e:  # a read-only workspace keeps sessions in memory only
            logger.warning("could not save sessions to %s (%s); they last until the server stops", self.path, e)
