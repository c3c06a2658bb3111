"""Where a label store lives: a SQLite file (the embedded default) or a PostgreSQL database.

A location is written the way ``--labels`` and ``CORRAL_LABELS`` take it::

    labels.sqlite                       a file (relative paths are relative to the working folder)
    sqlite:/data/ws/labels.sqlite       the same, said explicitly
    postgresql://corral@db.example/labels
    postgresql:///labels?host=/run/postgresql     a local server over its Unix socket

Without one, a workspace's store is its ``labels.sqlite``. Anything else is refused with a message
that lists these forms, before anything is opened.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from corral.storage.events import LabelError

if TYPE_CHECKING:
    from corral.storage.workspace import Workspace

#: The environment variable every command and the server read when ``--labels`` is not given.
ENV = "CORRAL_LABELS"

_FORMS = "a SQLite file path, sqlite:PATH, or postgresql://[user[:password]@]host[:port]/database"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class StoreLocation:
    """One parsed location: ``kind`` is ``"sqlite"`` (``target`` a resolved path) or
    ``"postgresql"`` (``target`` the connection URL as given)."""

    kind: str
    target: str

    @property
    def path(self) -> Path:
        return Path(self.target)

    def __str__(self) -> str:
        """For messages and logs: the path, or the URL without its password."""
        return f"sqlite:{self.target}" if self.kind == "sqlite" else redact(self.target)


def parse(value: "str | os.PathLike[str]") -> StoreLocation:
    """The location ``value`` names, or :class:`LabelError` saying which forms are accepted."""
    if isinstance(value, os.PathLike):
        return StoreLocation("sqlite", str(Path(value).expanduser().resolve()))
    if not isinstance(value, str) or not value.strip():
        raise LabelError(f"label store {value!r:.80}: expected {_FORMS}")
    text = value.strip()
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(text)
        if not (parts.path.strip("/") or "dbname=" in parts.query):
            raise LabelError(f"label store {redact(text)}: name the database, as in postgresql://host/DATABASE")
        return StoreLocation("postgresql", text)
    if scheme == "sqlite":
        path = text[len("sqlite:") :]
        path = path[2:] if path.startswith("//") else path  # sqlite:///abs and sqlite:rel both work
        if not path:
            raise LabelError(f"label store {text!r}: sqlite: needs a file path, as in sqlite:/data/ws/labels.sqlite")
        return StoreLocation("sqlite", str(Path(path).expanduser().resolve()))
    if m and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise LabelError(f"label store {redact(text)}: {scheme}: is not a label store kind; expected {_FORMS}")
    return StoreLocation("sqlite", str(Path(text).expanduser().resolve()))


def resolve(workspace: "Workspace | None" = None, labels: "str | os.PathLike[str] | None" = None) -> StoreLocation:
    """The store to use: ``labels`` when given, else ``$CORRAL_LABELS``, else the workspace's file."""
    if labels is None or (isinstance(labels, str) and not labels):
        labels = os.environ.get(ENV) or None
    if labels is not None:
        return parse(labels)
    if workspace is None:
        raise LabelError(f"no label store given: pass a workspace, --labels or set {ENV}")
    return StoreLocation("sqlite", str(workspace.labels_db))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    out = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)
    return re.sub(r"(?i)^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", out)
