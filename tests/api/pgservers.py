"""Several `corral serve` processes on one PostgreSQL label store, for the tests that need them:
the workspace's SQLite store moved into a fresh database of the session's PostgreSQL server by
`corral labels migrate`, then servers started with `--labels postgresql://...`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from dataclasses import dataclass

from corral.api.jobs import CLI_BOOT
from tests.api.conftest import Curation, build_curation_ws, free_port


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI_BOOT, *args], capture_output=True, text=True, timeout=timeout)


def http(method: str, url: str, token: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Server:
    """One `corral serve --labels URL` process on a free port."""

    def __init__(self, root, url: str):
        self.root, self.labels = root, url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> "Server":
        cmd = [sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(self.root), "--port", str(self.port), "--labels", self.labels, "--no-warm-split", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.proc.stderr.read()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.base}/api/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Team:
    """A workspace whose labels live in PostgreSQL, and two servers on it."""

    ws: Curation
    labels: str  # the database's URL
    servers: list[Server]


@pytest.fixture(scope="module")
def team(tmp_path_factory, pg_server):
    """One per test module (the servers take seconds to start): the curation workspace's store
    moved into a fresh database of the session's PostgreSQL server by `corral labels migrate`
    (which then refuses to move it there again), and two `corral serve --labels` on it."""
    ws = build_curation_ws(tmp_path_factory.mktemp("team") / "ws")
    url = pg_server.new_database()
    p = cli("labels", "migrate", "--from", f"sqlite:{ws.root / 'labels.sqlite'}", "--to", url)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["equal"] and out["rows"]["items"] == ws.n
    again = cli("labels", "migrate", "--from", f"sqlite:{ws.root / 'labels.sqlite'}", "--to", url)
    assert again.returncode == 2 and "not empty" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    servers = [Server(ws.root, url), Server(ws.root, url)]
    try:
        for s in servers:
            s.start()
        yield Team(ws, url, servers)
    finally:
        for s in servers:
            s.stop()
        pg_server.drop_database(url)
