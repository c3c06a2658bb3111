"""A private PostgreSQL server, started in a temporary folder: the tests' (tests/conftest.py starts
one per session) and the label store benchmark's.

``initdb`` into a temporary folder and ``pg_ctl start``, listening on a Unix socket in that folder
only (``listen_addresses=''``: nothing on the network). PostgreSQL refuses to run as root, so as
root the folder is handed to the ``postgres`` user and the server runs as that user; the tests
connect over the socket (``trust`` authentication, socket-only). Each test gets a database of its
own (:meth:`PgServer.new_database`). The binaries come from Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``) or the ``PATH``; :func:`pg_bin` is None without them.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
from pathlib import Path

NO_POSTGRES = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (CI installs it)"
SERVER_USER = "postgres"


def pg_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl`` (the newest Debian version first), or None."""
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True):
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


class PgServer:
    """One PostgreSQL server in ``root`` (its data and its socket), stopped by :meth:`stop`."""

    def __init__(self, root: Path, *, fsync: bool = False):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError(NO_POSTGRES)
        self.root = Path(root)
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self._as_postgres = os.geteuid() == 0
        self.user = SERVER_USER if self._as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count()
        # Tests kill Corral's processes, never the database host, so they need no fsync (and on a
        # busy disk it costs seconds per test); the benchmark starts a server with it on.
        self.durability = "" if fsync else "-c fsync=off -c full_page_writes=off"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> "PgServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam(SERVER_USER)
            for p in (self.root, self.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            # the server user must reach its folder through the temporary folders above it
            for parent in self.root.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        r = self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-2000:]}")
        opts = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c max_connections=300 -c shared_buffers=32MB {self.durability}"
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w", "-t", "60", "start")
        if r.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-1000:]}\n{log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&user={self.user}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database :meth:`new_database` made (closing whatever is still connected to it):
        each is a few MB on disk, and a session makes dozens."""
        import psycopg

        name = url.split("///", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.parent.name.startswith("corral-test-pg-"):  # the folder made for it
            shutil.rmtree(self.root.parent, ignore_errors=True)
