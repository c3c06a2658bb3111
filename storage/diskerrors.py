"""A workspace that cannot be written: its disk is full, or it is read-only.

Both reach us as many different exceptions: ``OSError`` with ``ENOSPC`` / ``EDQUOT`` or ``EROFS`` /
``EACCES`` / ``EPERM`` from a file write, and SQLite's ``SQLITE_FULL``, ``SQLITE_READONLY`` or
``SQLITE_CANTOPEN`` from the label store. :func:`write_problem` names the condition behind any of
them (following the chain of causes) as :class:`WorkspaceFull` or :class:`WorkspaceReadOnly`, with a
message that says what is wrong and what to do, so the API answers 507 or 503 with that message and
the command line prints it as one line, instead of "internal error" or a traceback.

The label store also opens a store it may not write read-only (:func:`connect_read_only`), so a
read-only workspace can still be browsed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_CANTOPEN = 13, 8, 14


class WorkspaceWriteError(OSError):
    """The workspace cannot be written; ``str()`` says why and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


class WorkspaceFull(WorkspaceWriteError):
    """No space left (or the quota is used up) on the workspace's disk."""

    def __init__(self, what: str = "") -> None:
        where = f" (writing {what})" if what else ""
        super().__init__(errno.ENOSPC, f"the workspace's disk is full{where}; free some space or move the workspace to a larger disk, then try again")


class WorkspaceReadOnly(WorkspaceWriteError):
    """The workspace (or the file) is read-only: it can be browsed, not changed."""

    def __init__(self, what: str = "") -> None:
        where = f" (cannot write {what})" if what else ""
        super().__init__(errno.EROFS, f"the workspace is read-only{where}: it can be browsed, but labels and other changes need a writable workspace")


def _one(exc: BaseException, what: str) -> WorkspaceWriteError | None:
    if isinstance(exc, WorkspaceWriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        name = what or (Path(exc.filename).name if isinstance(exc.filename, (str, os.PathLike)) else "")
        if exc.errno in FULL_ERRNOS:
            return WorkspaceFull(name)
        if exc.errno in READ_ONLY_ERRNOS:
            return WorkspaceReadOnly(name)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        code = code & 0xFF if isinstance(code, int) else None  # extended codes keep the primary one in the low byte
        text = str(exc).lower()
        if code == _SQLITE_FULL or "disk is full" in text:
            return WorkspaceFull(what or "the label store")
        if code == _SQLITE_READONLY or "readonly database" in text:
            return WorkspaceReadOnly(what or "the label store")
    return None


def write_problem(exc: BaseException, what: str = "") -> WorkspaceWriteError | None:
    """The full-disk or read-only condition behind ``exc`` (or one of its causes), else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        found = _one(cur, what)
        if found is not None:
            return found
        cur = cur.__cause__ or cur.__context__
    return None


def folder_problem(folder: Path, what: str = "") -> WorkspaceWriteError | None:
    """Why files cannot be made in ``folder`` (tried with a temporary file), or None if they can."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".corral-probe.", dir=folder)
    except OSError as e:
        return write_problem(e, what) or (WorkspaceReadOnly(what) if not folder.exists() else None)
    os.close(fd)
    os.unlink(tmp)
    return None


def is_unopenable(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused to open or write the file (not: the file is not a database)."""
    code = getattr(exc, "sqlite_errorcode", None)
    code = code & 0xFF if isinstance(code, int) else None
    return code in (_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_CANTOPEN) or write_problem(exc) is not None


def connect_read_only(path: Path, *, timeout_s: float) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file in a folder that may not be written.

    ``mode=ro`` reads a WAL store whose side files exist; a store closed cleanly has none, and on a
    read-only folder SQLite cannot make them, so it is then opened ``immutable`` (nobody can be
    writing it: the folder is read-only)."""
    uri = Path(path).resolve().as_uri()
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"{uri}?{flags}", uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as e:
            last = e
    assert last is not None
    raise last
