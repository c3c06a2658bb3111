"""One writer at a time: an advisory lock on a file in the workspace, held while a stage writes.

Two ``corral embed`` runs into one workspace (two terminals, or the viewer's job and a shell) would
otherwise both embed every item, and each one's start-up sweeps the other's half-written shards.
The second run says who holds the workspace and waits for it; when it gets the lock it resumes
from the shards the first one finished, so nothing is embedded twice. The lock is ``flock`` on a
file: the kernel releases it when the holder exits, even by SIGKILL, so a crash never leaves a
workspace locked. Where ``fcntl`` is missing (Windows) there is no lock and a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def holder(path: Path) -> str:
    """Who the lock file says holds it ("pid 123 since 12:00:00"), or "another run"."""
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {int(info['pid'])} since {time.strftime('%H:%M:%S', time.localtime(float(info['since'])))}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"


@contextmanager
def workspace_lock(path: Path, *, what: str, wait: bool = True) -> Iterator[None]:
    """Hold the lock file ``path`` for the block. Held by someone else: log who and wait for it
    (``wait``), or raise :class:`BlockingIOError` saying who holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        logger.warning("%s: no file locking on this platform; do not run two at once on one workspace", what)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path)
            if not wait:
                raise BlockingIOError(f"{what}: the workspace is busy ({who} holds {path.name})") from None
            logger.warning("%s: %s is writing this workspace; waiting for it to finish, then resuming from what it wrote", what, who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
