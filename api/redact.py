"""Server paths, and who may see them.

Curators and admins start jobs on the server's folders, so they see where things lie. A viewer (or a
recognition service) has no use for the server's layout and should not learn it: the answers they
get carry file and folder names, never absolute paths. :func:`sees_paths` says who is who, and
:func:`hide_paths` rewrites text or a JSON-like value for the others. Messages are written by many
parts (the label store, a job's command line, the index loader), so the rewriting works on the text
itself rather than trusting each part to leave paths out.
"""

from __future__ import annotations

import re
from typing import Any

from corral.api.auth import User

#: an absolute POSIX path: a slash not preceded by a word character, a dot, a colon or a slash, so
#: "img/s", "3/4", "./x", "http://host/a" and "s3://bucket/key" are left alone
_ABSOLUTE = re.compile(r"(?<![\w.:/~])/[^\s'\"`(),;:<>\[\]{}|]*")


def sees_paths(user: User) -> bool:
    """Whether ``user`` may see absolute server paths: those who may start jobs (curators, admins)."""
    return user.can("write")


def _last_part(match: re.Match[str]) -> str:
    parts = [p for p in match.group(0).split("/") if p]
    return f"…/{parts[-1]}" if parts else "…/"


def hide_paths(value: Any) -> Any:
    """``value`` with every absolute path in its text cut to its last part (``/srv/photos/cat.jpg``
    becomes ``…/cat.jpg``); dicts, lists and tuples are walked, other values returned as they are."""
    if isinstance(value, str):
        return _ABSOLUTE.sub(_last_part, value)
    if isinstance(value, dict):
        return {k: hide_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths(v) for v in value]
    return value


def for_user(value: Any, user: User) -> Any:
    """``value`` as ``user`` may see it: unchanged for curators and admins, paths hidden otherwise."""
    return value if sees_paths(user) else hide_paths(value)
