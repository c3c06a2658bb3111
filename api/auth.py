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

People sign in to the viewer with a name and a password instead. A password is kept only as an
Argon2id hash (argon2-cffi's RFC 9106 low-memory profile: 3 passes over 64 MiB, 4 lanes, a random
16-byte salt; about 0.15 s per check on one core), which is slow to brute-force on purpose. A user
may have a password, a token, or both: people sign in with the first, services and scripts send
the second.
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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

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
#: what a browser session made from a password remembers of it (see :meth:`UserStore.credential`)
PASSWORD_MARK = "pw:"
#: shortest and longest password accepted (the longest bounds the work one sign-in asks for)
MIN_PASSWORD, MAX_PASSWORD = 8, 1024

#: Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile); a stored hash made with
#: other parameters still verifies, and is re-hashed with these at the next sign-in
HASHER = PasswordHasher()
#: a hash to check against when the name is unknown, so that a wrong name takes as long as a wrong password
_DUMMY_HASH = HASHER.hash("not a password of anyone " + secrets.token_hex(8))


class AuthError(ValueError):
    """Bad user input (unknown role, bad name, duplicate user)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: str = ""
    has_password: bool = False
    has_token: bool = False

    def can(self, permission: str) -> bool:
        """Whether this user's role holds ``permission`` (read, write, recognize, admin)."""
        return self.role in PERMISSIONS[permission]

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "can": sorted(p for p in PERMISSIONS if self.can(p)),
            "password": self.has_password,
            "token": self.has_token,
        }


def _user(name: str, u: dict[str, Any]) -> User:
    return User(name, u["role"], u.get("created_at", ""), bool(u.get("password_argon2")), bool(u.get("token_sha256")))


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


def check_password(password: str, name: str = "") -> str:
    """A password good enough to store: 8 to 1,024 characters, not the user's name."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"password: use {MIN_PASSWORD} to {MAX_PASSWORD:,} characters")
    if name and password.strip().lower() == name.lower():
        raise AuthError("password: it must not be the user name")
    return password


def _password_mark(password_hash: str) -> str:
    return PASSWORD_MARK + hashlib.sha256(password_hash.encode()).hexdigest()


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
            return [_user(n, u) for n, u in sorted(self._users.items())]

    def get(self, name: str) -> User | None:
        with self._lock:
            self._load()
            u = self._users.get(name)
            return _user(name, u) if u else None

    def authenticate(self, token: str | None) -> User | None:
        """The user a token belongs to, or None."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        h = hash_token(token)
        with self._lock:
            self._load()
            for known, name in self._by_hash.items():
                if hmac.compare_digest(known, h):
                    return _user(name, self._users[name])
        return None

    def check_password(self, name: str, password: str) -> User | None:
        """The user ``name`` when ``password`` is theirs, else None. Takes the same time for an
        unknown name, a user without a password and a wrong password; a hash made with older
        parameters is replaced by one made with :data:`HASHER`'s."""
        with self._lock:
            self._load()
            u = self._users.get(name) if isinstance(name, str) else None
            stored = str(u.get("password_argon2") or "") if u else ""
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return None
        try:
            HASHER.verify(stored or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if not stored or u is None:
            return None
        if HASHER.check_needs_rehash(stored):
            try:
                self.set_password(name, password)
            except (AuthError, OSError) as e:  # signing in matters more than a stronger hash
                logger.warning("could not re-hash the password of %s: %s", name, e)
        return self.get(name)

    def credential(self, name: str, *, token: str | None = None) -> str:
        """What a session remembers of the credential it was made from: the token's hash, or a
        mark of the current password hash (a new password, or a new token, ends the sessions
        made from the old one)."""
        if token is not None:
            return hash_token(token)
        with self._lock:
            self._load()
            stored = str(self._users.get(name, {}).get("password_argon2") or "")
        return _password_mark(stored)

    def holder(self, name: str, token_sha256: str) -> User | None:
        """User ``name`` if their current token still has hash ``token_sha256`` (a session made
        from a token ends when the user is removed or given a new one)."""
        with self._lock:
            self._load()
            u = self._users.get(name)
            if u is None:
                return None
            if token_sha256.startswith(PASSWORD_MARK):
                stored = str(u.get("password_argon2") or "")
                if not stored or not hmac.compare_digest(_password_mark(stored), token_sha256):
                    return None
            elif not u.get("token_sha256") or not hmac.compare_digest(str(u.get("token_sha256", "")), token_sha256):
                return None
            return _user(name, u)

    # -- writing ----------------------------------------------------------------------------
    def _save(self) -> None:
        stored = {name: u for name, u in self._users.items() if name not in self._held}
        atomic_write_json(self.path, {"format": "corral users v1 (tokens stored as sha256, passwords as argon2id)", "users": stored})
        self._mtime = None  # re-read (and re-index) on next access

    def add(self, name: str, *, role: str, replace: bool = False, password: str | None = None, token: bool = True) -> str | None:
        """Create a user (or, with ``replace``, give an existing one a new role and token); returns
        the token, or None with ``token=False`` (a person who signs in with ``password`` only)."""
        check_name(name)
        check_role(role)
        if password is not None:
            check_password(password, name)
        if password is None and not token:
            raise AuthError(f"user {name!r} needs a password or a token to sign in with")
        hashed = HASHER.hash(password) if password is not None else None  # slow: outside the lock
        with self._lock:
            self._load()
            existed = name in self._users
            if existed and not replace:
                raise AuthError(f"user {name!r} exists; `corral users passwd {name}` sets a new password, --rotate gives a new token")
            new = new_token() if token else None
            old = self._users.get(name, {})
            rec: dict[str, Any] = {"role": role, "created_at": old.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if new is not None:
                rec["token_sha256"] = hash_token(new)
            if hashed is not None or old.get("password_argon2"):
                rec["password_argon2"] = hashed or old["password_argon2"]
            self._users[name] = rec
            self._save()
        logger.info("user %s (%s) %s", name, role, "replaced" if existed else "added")
        return new

    def set_password(self, name: str, password: str) -> None:
        """Give ``name`` a new password (sessions made from the old one end)."""
        check_password(password, name)
        self._set(name, "password_argon2", HASHER.hash(password))
        logger.info("user %s given a new password", name)

    def set_role(self, name: str, role: str) -> None:
        """Give ``name`` another role (their sessions and token keep working, with the new role)."""
        check_role(role)
        self._set(name, "role", role)
        logger.info("user %s now has role %s", name, role)

    def _set(self, name: str, key: str, value: str) -> None:
        """Set one field of a stored user's record and write the file (AuthError: no such user)."""
        with self._lock:
            self._load()
            if name not in self._users or name in self._held:
                raise AuthError(f"no user {name!r}")
            self._users[name][key] = value
            self._save()

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
