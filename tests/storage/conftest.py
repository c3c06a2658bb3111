"""S3 fixtures of the storage tests: every publish test runs against moto's server and against
SeaweedFS (tests/storage/s3servers.py), both on 127.0.0.1."""

from __future__ import annotations

import pytest

from corral.storage.labels import LabelStore
from tests.storage.factory import IDS
from tests.storage.s3servers import NO_WEED, MotoServer, SeaweedServer, weed_binary

#: The servers a test parametrized with ``s3_kind`` runs against; SeaweedFS skips, saying how to
#: get it, where its binary is missing (the dev extra installs it, so CI runs it).
S3_KINDS = [
    pytest.param("moto", id="moto"),
    pytest.param("seaweedfs", id="seaweedfs", marks=pytest.mark.skipif(weed_binary() is None, reason=NO_WEED)),
]


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory):
    """One SeaweedFS for the session (about 3 s to start); yields its S3 endpoint."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server.endpoint
    server.stop()


@pytest.fixture(params=S3_KINDS)
def s3_kind(request) -> str:
    return request.param


@pytest.fixture
def s3_endpoint(s3_kind, request) -> str:
    """The endpoint of the session's server of each kind (moto's is tests/conftest.py's)."""
    return request.getfixturevalue("s3_server" if s3_kind == "moto" else "seaweed_server")


@pytest.fixture
def own_s3_server(s3_kind, tmp_path):
    """A server of each kind for one test alone, which it may stop and start again (same port,
    same data); stopped at the end whatever happened."""
    server = MotoServer() if s3_kind == "moto" else SeaweedServer(tmp_path / "seaweedfs")
    try:
        yield server
    finally:
        server.stop()


#: The label store backends every store test runs on: the embedded SQLite file and a database of
#: the session's PostgreSQL server (bench/pgserver.py).
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def new_location(backend, tmp_path, request):
    """A function that returns the location of a fresh, empty store of the test's backend: a file
    under ``tmp_path``, or a new database of the session's PostgreSQL server."""
    made = iter(range(1_000))
    databases: list[str] = []

    def make() -> str:
        if backend == "sqlite":
            return str(tmp_path / f"labels{next(made) or ''}.sqlite")
        databases.append(request.getfixturevalue("pg_server").new_database())
        return databases[-1]

    yield make
    for url in databases:
        request.getfixturevalue("pg_server").drop_database(url)


@pytest.fixture
def store(new_location):
    """A label store of its own, on each backend, that knows the items ``IDS``."""
    s = LabelStore(new_location())
    s.register_items(IDS)
    yield s
    s.close()
