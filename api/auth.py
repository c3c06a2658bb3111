"""Users, tokens and roles, kept in the workspace as ``users.json`` (tokens stored hashed).

Roles and what they may do:

========== ==============================================================
viewer     read the map, thumbnails, labels and events
curator    everything a viewer may, plus label actions and jobs
service    recognition only (for services that name new images)
admin      everything, plus managing users
========== ==============================================================

A token is shown once, when it is made; the file keeps only its SHA-256. Tokens are 256 random
bits, so a fast hash is enough (there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.storage.workspace import atomic_write_json

logger = logging.getLogger(__name__)

ROLES = ("viewer", "curator", "service", "admin")

#: permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"viewer", "curator", "admin"}),
    "write": frozenset({"curator", "admin"}),
    "recognize": frozenset({"service", "curator", "viewer", "admin"}),
    "admin": frozenset({"admin"}),
}

#: the user `corral serve` makes for local single-user mode
LOCAL_USER = "local"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "crl_"


class AuthError(ValueError):
    """Bad user input (unknown role, bad name, duplicate user)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: str = ""

    def can(self, permission: str) -> bool:
        """Whether this user's role holds ``permission`` (read, write, recognize, admin)."""
        return self.role in PERMISSIONS[permission]

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_at": self.created_at, "can": sorted(p for p in PERMISSIONS if self.can(p))}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AuthError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


class UserStore:
    """The users of one workspace. Reloads the file when another process (the CLI) changes it."""

    FILE = "users.json"

    def __init__(self, workspace_root: str | Path):
        self.path = Path(workspace_root) / self.FILE
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._users: dict[str, dict[str, Any]] = {}
        self._by_hash: dict[str, str] = {}
        self._held: dict[str, dict[str, Any]] = {}  # users of this process only (see hold())

    # -- reading ----------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._index(dict(self._held), None)
            return
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self.path.read_text())
            users = dict(data.get("users", {}))
        except (OSError, ValueError, AttributeError) as e:
            raise AuthError(f"{self.path} is not a valid users file ({e}); fix or remove it") from None
        self._index({**users, **self._held}, mtime)

    def _index(self, users: dict[str, dict[str, Any]], mtime: int | None) -> None:
        self._users = users
        self._by_hash = {u["token_sha256"]: name for name, u in users.items() if u.get("token_sha256")}
        self._mtime = mtime

    def users(self) -> list[User]:
        """Every user, by name."""
        with self._lock:
            self._load()
            return [User(n, u["role"], u.get("created_at", "")) for n, u in sorted(self._users.items())]

    def get(self, name: str) -> User | None:
        with self._lock:
            self._load()
            u = self._users.get(name)
            return User(name, u["role"], u.get("created_at", "")) if u else None

    def authenticate(self, token: str | None) -> User | None:
        """The user a token belongs to, or None."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        h = hash_token(token)
        with self._lock:
            self._load()
            for known, name in self._by_hash.items():
                if hmac.compare_digest(known, h):
                    u = self._users[name]
                    return User(name, u["role"], u.get("created_at", ""))
        return None

    def holder(self, name: str, token_sha256: str) -> User | None:
        """User ``name`` if their current token still has hash ``token_sha256`` (a session made
        from a token ends when the user is removed or given a new one)."""
        with self._lock:
            self._load()
            u = self._users.get(name)
            if u is None or not hmac.compare_digest(str(u.get("token_sha256", "")), token_sha256):
                return None
            return User(name, u["role"], u.get("created_at", ""))

    # -- writing ----------------------------------------------------------------------------
    def _save(self) -> None:
        stored = {name: u for name, u in self._users.items() if name not in self._held}
        atomic_write_json(self.path, {"format": "corral users v1 (tokens stored as sha256)", "users": stored})
        self._mtime = None  # re-read (and re-index) on next access

    def add(self, name: str, *, role: str, replace: bool = False) -> str:
        """Create a user (or, with ``replace``, give an existing one a new role and token); returns the token."""
        check_name(name)
        check_role(role)
        with self._lock:
            self._load()
            existed = name in self._users
            if existed and not replace:
                raise AuthError(f"user {name!r} exists; pass --rotate to give them a new token")
            token = new_token()
            self._users[name] = {
                "role": role,
                "token_sha256": hash_token(token),
                "created_at": self._users.get(name, {}).get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self._save()
        logger.info("user %s (%s) %s", name, role, "given a new token" if existed else "added")
        return token

    def hold(self, name: str, *, role: str) -> str:
        """A user known to this store only, in memory, with a new token (returned): the local
        user of a read-only workspace, whose token cannot be written to ``users.json``. It signs in
        until the process ends and is never written."""
        check_name(name)
        check_role(role)
        token = new_token()
        with self._lock:
            self._held[name] = {"role": role, "token_sha256": hash_token(token), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self._mtime = -1  # re-read and re-index with it on next access
        logger.info("user %s (%s) kept in memory only", name, role)
        return token

    def remove(self, name: str) -> None:
        with self._lock:
            self._load()
            if name not in self._users:
                raise AuthError(f"no user {name!r}")
            del self._users[name]
            self._save()

    def is_local_only(self) -> bool:
        """True when the only user (if any) is the local single-user account."""
        names = [u.name for u in self.users()]
        return not names or names == [LOCAL_USER]
