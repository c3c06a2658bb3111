"""Shared fixtures: paths to the real data, a real S3 server on loopback, cached workspaces.

Tests that judge quality on an evaluation set (COIL, ORL, ...) read it from the shared data and
skip when it is missing; the others run on images the tests draw themselves (tests/generated.py).
Expensive things (embedding a data set, numba compiling UMAP) happen once per test session.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"


def shared_data(*parts: str) -> Path:
    """A path under the shared evaluation sets; the calling test skips when it is missing."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"evaluation set {parts[0] if parts else 'data'} not found under {DATA} (set CORRAL_SHARED to the folder holding data/); quality tests need it")
    return p


@pytest.fixture(scope="session")
def corral_wheel(tmp_path_factory) -> Path:
    """The package's wheel, built once per session from this checkout (no isolation: offline)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)], check=True, timeout=300, capture_output=True)
    (wheel,) = out.glob("corral-*.whl")
    return wheel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL server for the session (bench/pgserver.py: initdb + pg_ctl, socket-only,
    about 1 s to start); skips, saying how to install it, where its binaries are missing."""
    from bench.pgserver import NO_POSTGRES, PgServer, pg_bin

    if pg_bin() is None:
        pytest.skip(NO_POSTGRES)
    import tempfile

    # its own folder, not pytest's: pytest prunes old sessions' folders when another session on the
    # machine starts, and a database whose files vanish crashes mid-test
    server = PgServer(Path(tempfile.mkdtemp(prefix="corral-test-pg-")) / "pg").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1; yields its endpoint URL."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def coil20_workspace(tmp_path_factory) -> Path:
    """COIL-20 (1,440 real images, 20 objects) embedded once with the pretrained default model."""
    from corral.pipeline.embed import EmbedConfig, embed

    ws = tmp_path_factory.mktemp("coil20-ws")
    embed(str(shared_data("coil20", "images")), workspace=ws, config=EmbedConfig(progress=False))
    return ws


@pytest.fixture(scope="session")
def generated_workspace(tmp_path_factory) -> Path:
    """The generated object set (tests/generated.py: 8 objects x 36 poses) embedded once with the
    pretrained default model: real files and a real embedder, for tests of the plumbing."""
    from corral.pipeline.embed import EmbedConfig, embed
    from tests.generated import generated_data

    ws = tmp_path_factory.mktemp("generated-ws")
    embed(str(generated_data("images")), workspace=ws, config=EmbedConfig(progress=False))
    return ws


@pytest.fixture(scope="session")
def generated_map(generated_workspace, tmp_path_factory) -> Path:
    """A copy of the embedded generated workspace with its map built once (``build_map`` defaults)."""
    import shutil

    from corral.pipeline.mapping import build_map

    ws = tmp_path_factory.mktemp("generated-map") / "ws"
    shutil.copytree(generated_workspace, ws, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json", "cache", "maps"))
    build_map(workspace=ws)
    return ws


from tests.recognition_data import recognition_setup  # noqa: E402,F401  (session fixture of the recognition tests)


@pytest.fixture(scope="session")
def coil20_map(coil20_workspace, tmp_path_factory) -> Path:
    """A copy of the embedded COIL-20 workspace with its map built once (``build_map`` defaults)."""
    import shutil

    from corral.pipeline.mapping import build_map

    ws = tmp_path_factory.mktemp("coil20-map") / "ws"
    shutil.copytree(coil20_workspace, ws, ignore=shutil.ignore_patterns("labels.sqlite*", "users.json", "cache", "maps"))
    build_map(workspace=ws)
    return ws
