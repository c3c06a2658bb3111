"""``--labels STORE``: which label store a command uses (a SQLite file or a PostgreSQL database).

Every command that reads or writes labels takes it; without it the command uses
``$CORRAL_LABELS``, else the workspace's own ``labels.sqlite``. The value is checked, and a
PostgreSQL server reached (its tables created or migrated), before the command does any work, so a
typo or a server that is down costs one line at once. The choice is then put in ``CORRAL_LABELS``
for the rest of the process and the jobs it starts: every library function that opens the
workspace's store (exports, publish, the index, suggestions, the server's routes) reads that one
setting, and none needs its own argument for it.
"""

from __future__ import annotations

import argparse
import os

#: Commands whose work reads or writes labels (``labels`` adds the option to each of its actions).
LABEL_COMMANDS = ("serve", "export", "index", "suggest", "learn", "map", "publish")

HELP = "the label store: a SQLite file, sqlite:PATH or postgresql://[user@]host[:port]/database (default: $CORRAL_LABELS, else the workspace's labels.sqlite)"


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", dest="label_store", default=None, metavar="STORE", help=HELP)


def apply(args: argparse.Namespace) -> None:
    """Check ``--labels`` (or ``$CORRAL_LABELS``) and make it the process's label store.
    Raises :class:`~corral.storage.events.LabelError` (bad form) or
    :class:`~corral.storage.events.LabelStoreUnavailable` (server down), each one line."""
    from corral.storage.label_location import ENV, parse

    value = getattr(args, "label_store", None) or os.environ.get(ENV) or None
    if value is None:
        return
    where = parse(value)
    if where.kind == "postgresql":
        from corral.storage.labels import LabelStore

        LabelStore(where.target).close()  # reachable, and its tables are there
    os.environ[ENV] = value
