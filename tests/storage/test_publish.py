"""Publishing versions to a real S3 API and pulling them back; every test runs against moto's
server and against SeaweedFS, both on 127.0.0.1 (tests/storage/conftest.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import redirect_stdout

import numpy as np
import pytest

from corral.api.cli import main
from corral.storage import s3 as s3util
from corral.storage.labels import LabelStore
from corral.storage.publish import PublishError, publish, pull, versions
from corral.storage.workspace import Workspace
from tests.generated import generated_data
from tests.storage.factory import build_workspace, pick_images


def new_bucket(endpoint: str) -> str:
    name = f"corral-{uuid.uuid4().hex[:12]}"
    s3util.client(endpoint).create_bucket(Bucket=name)
    return name


def make_workspace(root, *, extra_vectors: int = 0, dim: int = 32, index: bool = True) -> Workspace:
    images = pick_images(generated_data("images"), classes=2, per_class=6)
    ws = build_workspace(root, images, dim=dim, extra_vectors=extra_vectors, shard_size=100_000)
    ids = ws.items().column("id").to_pylist()
    with LabelStore.open(ws) as s:
        s.assign(ids[:6], "duck", user="ana", exclude=[ids[5]])
        s.assign(ids[6:9], "car", user="bob")
    if index:
        import faiss

        _, vecs = ws.default_embedding_set().load()
        index_ = faiss.IndexFlatIP(vecs.shape[1])
        index_.add(vecs)
        ws.index_dir.mkdir()
        faiss.write_index(index_, str(ws.index_dir / "index.faiss"))
        (ws.index_dir / "index.json").write_text(json.dumps({"factory": "Flat", "metric": "ip"}))
        (ws.index_dir / ".index.faiss.tmp").write_bytes(b"a temporary file of an unfinished write")
    return ws


def run_cli(*args: str) -> tuple[int, dict | None]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["-q", *args])
    lines = buf.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None)


def test_publish_writes_a_complete_version_then_latest(s3_endpoint, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    bucket = new_bucket(s3_endpoint)
    rc, out = run_cli("publish", f"s3://{bucket}/team/coil", "--workspace", str(ws.root), "--endpoint-url", s3_endpoint)
    assert rc == 0 and {"version", "files", "bytes", "seconds"} <= set(out)
    v = out["version"]
    client = s3util.client(s3_endpoint)
    keys = dict(s3util.list_objects(client, s3util.S3Url(bucket, "team/coil/")))
    assert client.get_object(Bucket=bucket, Key="team/coil/LATEST")["Body"].read().decode().strip() == v
    base = f"team/coil/versions/{v}/"
    expected = {"manifest.json", "labels.json", "labels.parquet", "labels.sqlite", "embeddings/test-model/embeddings.json",
                "embeddings/test-model/part-00000.parquet", "embeddings/test-model/part-00000.items.parquet", "index/index.faiss", "index/index.json"}
    assert {k[len(base):] for k in keys if k.startswith(base)} == expected  # the temporary index file stays home
    assert out["files"] == len(expected) and out["bytes"] == sum(size for k, size in keys.items() if k.startswith(base))
    manifest = json.loads(client.get_object(Bucket=bucket, Key=base + "manifest.json")["Body"].read())
    for f in manifest["files"]:
        body = client.get_object(Bucket=bucket, Key=base + f["path"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"] and len(body) == f["bytes"]
    assert manifest["counts"]["labels"] == 2 and manifest["counts"]["labelled_items"] == 8 and manifest["counts"]["vectors"] == 12
    assert manifest["embeddings"]["test-model"]["model"] == "timm:test-model"
    assert manifest["index"] == ["index/index.faiss", "index/index.json"]
    assert versions(f"s3://{bucket}/team/coil", endpoint_url=s3_endpoint) == [v]


def test_pull_fetches_and_verifies_a_usable_workspace(s3_endpoint, tmp_path):
    import faiss

    ws = make_workspace(tmp_path / "ws")
    bucket = new_bucket(s3_endpoint)
    url = f"s3://{bucket}/p"
    v1 = publish(ws, url, endpoint_url=s3_endpoint).version
    rc, out = run_cli("pull", url, str(tmp_path / "copy"), "--endpoint-url", s3_endpoint)
    assert rc == 0 and out["version"] == v1 and out["verified"] == out["files"] == 8 and out["downloaded"] == 8
    copy = Workspace(tmp_path / "copy")
    ids0, vec0 = ws.default_embedding_set().load()
    ids1, vec1 = copy.default_embedding_set().load()
    assert list(ids0) == list(ids1) and np.array_equal(vec0, vec1)
    with LabelStore(ws.labels_db) as a, LabelStore(copy.labels_db) as b:
        assert a.item_labels() == b.item_labels() and len(b.events()) == 2
        a.rename_label("duck", "rubber duck", user="ana")  # a change, then a second version
    assert faiss.read_index(str(copy.index_dir / "index.faiss")).ntotal == 12
    (ws.index_dir / "index.json").unlink()
    v2 = publish(ws, url, endpoint_url=s3_endpoint).version
    # a reader of the pulled store crashed and left a write-ahead log with frames of the old file
    db = copy.labels_db
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE scribble (x)")
    conn.execute("INSERT INTO scribble VALUES (1)")
    conn.commit()
    stale = db.with_name(db.name + "-wal").read_bytes()
    conn.close()
    db.with_name(db.name + "-wal").write_bytes(stale)
    assert v2 != v1 and versions(url, endpoint_url=s3_endpoint) == sorted([v1, v2])
    res = pull(url, tmp_path / "copy", endpoint_url=s3_endpoint)
    assert res.version == v2 and res.removed == ["index/index.json"] and not (copy.index_dir / "index.json").exists()
    assert res.reused >= 4  # embeddings and the index did not change
    with LabelStore(copy.labels_db) as b:
        assert {li.name for li in b.labels()} == {"rubber duck", "car"} and b.check() == []
    check = sqlite3.connect(copy.labels_db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check.execute("SELECT name FROM sqlite_master WHERE name = 'scribble'").fetchone() is None
    check.close()
    old = pull(url, tmp_path / "old", version=v1, endpoint_url=s3_endpoint)
    assert old.version == v1 and json.loads((tmp_path / "old" / "manifest.json").read_text())["version"] == v1


def test_pull_refuses_a_damaged_copy(s3_endpoint, tmp_path):
    ws = make_workspace(tmp_path / "ws", index=False)
    bucket = new_bucket(s3_endpoint)
    v = publish(ws, f"s3://{bucket}/p", endpoint_url=s3_endpoint).version
    key = f"p/versions/{v}/labels.parquet"
    client = s3util.client(s3_endpoint)
    good = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(PublishError, match="checksum mismatch for labels.parquet"):
        pull(f"s3://{bucket}/p", tmp_path / "copy", endpoint_url=s3_endpoint, retries=0)
    assert not (tmp_path / "copy" / "labels.parquet").exists() and not (tmp_path / "copy" / "manifest.json").exists()


def test_clear_errors_for_missing_bucket_version_and_bad_options(s3_endpoint, tmp_path):
    ws = make_workspace(tmp_path / "ws", index=False)
    rc, _ = run_cli("publish", "s3://no-such-bucket-here/p", "--workspace", str(ws.root), "--endpoint-url", s3_endpoint, "--retries", "0")
    assert rc == 2
    with pytest.raises(PublishError, match="does not exist"):
        publish(ws, "s3://no-such-bucket-here/p", endpoint_url=s3_endpoint, retries=0)
    bucket = new_bucket(s3_endpoint)
    with pytest.raises(PublishError, match="no published version"):
        pull(f"s3://{bucket}/nothing", tmp_path / "x", endpoint_url=s3_endpoint, retries=0)
    with pytest.raises(PublishError, match="is not published"):
        pull(f"s3://{bucket}/nothing", tmp_path / "x", version="20200101T000000Z-deadbeef", endpoint_url=s3_endpoint, retries=0)
    with pytest.raises(ValueError, match="at least 5242880"):
        publish(ws, f"s3://{bucket}/p", endpoint_url=s3_endpoint, part_size=1 << 20)
    with pytest.raises(ValueError, match="not an S3 URL"):
        publish(ws, "/tmp/somewhere", endpoint_url=s3_endpoint)


def test_server_stopped_mid_publish_keeps_latest_and_a_rerun_completes(own_s3_server, tmp_path):
    """A ~18 MiB embeddings shard goes up in 5 MiB parts; the server stops after the first parts."""
    server = own_s3_server.start()
    endpoint = server.endpoint
    try:
        ws = make_workspace(tmp_path / "ws", extra_vectors=20_000, dim=256)
        shard = ws.default_embedding_set().shard_paths(0)[0]
        assert shard.stat().st_size > 15 << 20
        bucket = new_bucket(endpoint)
        url = f"s3://{bucket}/p"
        opts = dict(endpoint_url=endpoint, part_size=5 << 20, concurrency=2, retries=1, backoff_s=0.2, max_attempts=2)
        v1 = publish(ws, url, **opts).version
        with LabelStore.open(ws) as s:
            s.assign(ws.items().column("id").to_pylist()[9:12], "cow", user="cy")

        sent = 0
        midway, stopped = threading.Event(), threading.Event()

        def progress(n: int) -> None:
            nonlocal sent
            sent += n
            if sent > 7 << 20 and not midway.is_set():
                midway.set()
                stopped.wait(60)  # hold this part until the server is gone, so the stop lands mid-file

        failure: list[BaseException] = []

        def run() -> None:
            try:
                publish(ws, url, progress=progress, **opts)
            except BaseException as e:
                failure.append(e)

        t = threading.Thread(target=run)
        t.start()
        assert midway.wait(120), "the publish never got going"
        server.stop()
        stopped.set()
        t.join(120)
        assert not t.is_alive()
        assert len(failure) == 1 and isinstance(failure[0], PublishError), failure
        assert sent < shard.stat().st_size  # it really stopped part way through

        server.start()  # back, same port, same data
        client = s3util.client(endpoint)
        assert client.get_object(Bucket=bucket, Key="p/LATEST")["Body"].read().decode().strip() == v1
        assert versions(url, endpoint_url=endpoint) == [v1]  # the partial version has no manifest
        intact = pull(url, tmp_path / "v1", endpoint_url=endpoint)
        assert intact.version == v1 and intact.verified == intact.files

        t0 = time.perf_counter()
        res = publish(ws, url, **opts)
        assert res.version != v1 and res.reused >= 3 and res.uploaded >= 1  # resumed, not started over
        assert client.get_object(Bucket=bucket, Key="p/LATEST")["Body"].read().decode().strip() == res.version
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the broken upload was cleaned up
        got = pull(url, tmp_path / "v2", endpoint_url=endpoint)
        assert got.version == res.version and got.verified == got.files
        with LabelStore(tmp_path / "v2" / "labels.sqlite") as s:
            assert {li.name for li in s.labels()} == {"duck", "car", "cow"}
        assert time.perf_counter() - t0 < 300
        assert not os.path.exists(ws.cache_dir / "publish" / res.version)  # the staging copy is gone
        assert not os.path.exists(ws.cache_dir / "publish" / "pending.json")
    finally:
        server.stop()


def test_conditional_writes_are_enforced_by_the_server(s3_endpoint):
    """The LATEST pointer relies on the server refusing a stale If-Match and a second
    If-None-Match: * create with 412; this proves each server does."""
    from botocore.exceptions import ClientError

    bucket = new_bucket(s3_endpoint)
    client = s3util.client(s3_endpoint, max_attempts=1)
    first = client.put_object(Bucket=bucket, Key="p/LATEST", Body=b"v1\n", IfNoneMatch="*")["ETag"]
    for kwargs in ({"IfNoneMatch": "*"}, {"IfMatch": '"00000000000000000000000000000000"'}):
        with pytest.raises(ClientError) as e:
            client.put_object(Bucket=bucket, Key="p/LATEST", Body=b"v0\n", **kwargs)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412, kwargs
    client.put_object(Bucket=bucket, Key="p/LATEST", Body=b"v2\n", IfMatch=first)
    with pytest.raises(ClientError) as e:  # the ETag read before that update is stale now
        client.put_object(Bucket=bucket, Key="p/LATEST", Body=b"v0\n", IfMatch=first)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=bucket, Key="p/LATEST")["Body"].read() == b"v2\n"


def test_two_publishers_at_once_keep_both_versions_and_latest_names_the_newer(s3_endpoint, tmp_path, monkeypatch):
    """Two workspaces publish to one URL at the same moment. Both reach the LATEST write
    together (a barrier holds each there); the one with the newer version id writes first, the
    older one a moment later, which is the order that lets a blind overwrite point LATEST
    backwards."""
    a = make_workspace(tmp_path / "a", index=False)
    url = f"s3://{new_bucket(s3_endpoint)}/p"
    v0 = publish(a, url, endpoint_url=s3_endpoint).version
    with LabelStore.open(a) as s:
        s.assign(a.items().column("id").to_pylist()[9:12], "cow", user="cy")
    b = make_workspace(tmp_path / "b", index=False)
    with LabelStore.open(b) as s:
        s.assign(b.items().column("id").to_pylist()[:3], "boat", user="di")

    barrier = threading.Barrier(2, timeout=60)
    arrived: list[str] = []
    held: set[int] = set()

    def hold_first_latest_write(request, **_):
        if not request.url.endswith("/p/LATEST") or threading.get_ident() in held:
            return
        held.add(threading.get_ident())
        body = request.body
        mine = (body.getvalue() if hasattr(body, "getvalue") else bytes(body)).decode().strip()
        arrived.append(mine)
        barrier.wait()
        if mine == min(arrived):
            time.sleep(0.5)  # the older version writes last

    real_client = s3util.client

    def client(*args, **kwargs):
        c = real_client(*args, **kwargs)
        c.meta.events.register("before-send.s3.PutObject", hold_first_latest_write)
        return c

    monkeypatch.setattr(s3util, "client", client)
    results: dict[str, object] = {}

    def run(name: str, ws: Workspace) -> None:
        try:
            results[name] = publish(ws, url, endpoint_url=s3_endpoint, retries=1, backoff_s=0.1)
        except BaseException as e:  # reported below
            results[name] = e

    threads = [threading.Thread(target=run, args=(n, ws)) for n, ws in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(arrived) == sorted({r.version for r in results.values() if hasattr(r, "version")}), results
    va, vb = results["a"].version, results["b"].version
    assert len({v0, va, vb}) == 3  # no version id used twice
    assert versions(url, endpoint_url=s3_endpoint) == sorted([v0, va, vb])
    latest = real_client(s3_endpoint).get_object(Bucket=url[5:].split("/")[0], Key="p/LATEST")["Body"].read().decode().strip()
    assert latest == max(va, vb)
    for name in ("a", "b"):  # each complete version pulls and verifies
        got = pull(url, tmp_path / f"pulled-{name}", version=results[name].version, endpoint_url=s3_endpoint)
        assert got.verified == got.files
