"""``POST /api/recognize`` on real images and vectors: per-input errors, roles, micro-batching,
hot reload of a newly published version from a local S3 server, and a bounded load test."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from corral.api.app import create_app
from corral.api.auth import UserStore
from corral.api.settings import Settings
from corral.storage.index import LabelIndex
from corral.storage.maps import clusters_table, points_table, write_map
from corral.storage.workspace import Workspace
from tests.conftest import free_port


@pytest.fixture(scope="module")
def ws(recognition_setup, tmp_path_factory) -> Path:
    """A private copy of the shared recognition workspace, with users and a map."""
    root = tmp_path_factory.mktemp("api-recog") / "ws"
    shutil.copytree(recognition_setup.workspace, root)
    ids = Workspace(root).items().column("id").to_pylist()
    n = len(ids)
    write_map(
        Workspace(root).map_dir("coil"),
        points=points_table(ids=ids, xy=np.random.default_rng(0).random((n, 2)), cluster=np.zeros(n), probability=np.ones(n), outlier_score=np.zeros(n), is_new=np.zeros(n, bool)),
        clusters=clusters_table(cluster=np.array([0]), size=np.array([n]), exemplars=[ids[:3]], cohesion=np.array([1.0])),
        meta={"name": "coil"},
    )
    return root


@pytest.fixture(scope="module")
def tokens(ws) -> dict[str, str]:
    users = UserStore(ws)
    return {role: users.add(f"u-{role}", role=role) for role in ("service", "viewer", "curator")}


@pytest.fixture(scope="module")
def client(ws, tokens):
    with TestClient(create_app(Settings(workspace=ws))) as c:
        yield c


def _vector_of(ws: Path, label: str) -> np.ndarray:
    """The embedding (as the embed stage wrote it) of an indexed item with ``label``."""
    idx = LabelIndex.load(ws)
    row = int(np.flatnonzero(idx.row_label == idx.label_names.index(label))[0])
    ids, vecs = Workspace(ws).default_embedding_set().load()
    return vecs[list(ids).index(idx.ids[row])]


def _auth(tokens, role="service") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def _small_jpeg(path: Path, side: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((side, side)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_images_several_at_once_with_bad_ones_answered_per_input(client, tokens, recognition_setup):
    q = recognition_setup.queries
    files = [
        ("images", ("a.png", q["obj001"][0].read_bytes(), "image/png")),
        ("images", ("junk.png", b"\x89PNG\r\n\x1a\n but then nothing", "image/png")),
        ("images", ("b.jpg", _small_jpeg(q["obj010"][1]), "image/jpeg")),
        ("other", ("notes.txt", b"hello, I am text", "text/plain")),
        ("images", ("empty.png", b"", "image/png")),
        ("images", ("u.png", recognition_setup.unknown[0].read_bytes(), "image/png")),
    ]
    r = client.post("/api/recognize", files=files, headers=_auth(tokens))
    assert r.status_code == 200, r.text
    body = r.json()
    res = {x["input"]: x for x in body["results"]}
    assert [x["input"] for x in body["results"]] == ["a.png", "junk.png", "b.jpg", "notes.txt", "empty.png", "u.png"]
    assert res["a.png"]["status"] == 200 and res["a.png"]["label"] == "obj001" and res["a.png"]["decision"] == "obj001"
    assert res["a.png"]["top"][0][0] == "obj001" and 0 < res["a.png"]["score"] <= 1
    assert res["b.jpg"]["label"] == "obj010"
    assert res["u.png"]["status"] == 200 and res["u.png"]["label"] is None and res["u.png"]["decision"] == "unknown"
    assert res["junk.png"]["status"] == 422 and res["notes.txt"]["status"] == 422 and "not_an_image" in res["notes.txt"]["error"]
    assert res["empty.png"]["status"] == 400
    assert body["answered"] == 3 and body["failed"] == 3 and "Traceback" not in r.text


def test_vectors_json_binary_and_their_errors(client, tokens, ws):
    dim = LabelIndex.load(ws).dim
    v = _vector_of(ws, "obj004")
    body = {"vectors": [v.tolist(), [0.1] * (dim - 1), [float("nan")] * dim, [0.0] * dim, "text", (-v).tolist()], "k": 5, "top": 2}
    r = client.post("/api/recognize", content=json.dumps(body), headers={**_auth(tokens), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["label"] == "obj004" and res[0]["score"] > 0.9 and len(res[0]["top"]) <= 2
    assert [x["status"] for x in res] == [200, 422, 422, 422, 422, 200]
    assert "dimension" in res[1]["error"] and "NaN" in res[2]["error"] and "zero" in res[3]["error"]
    assert res[5]["label"] is None  # pointing away from everything is unknown
    raw = np.stack([v, v]).astype("<f4").tobytes()
    r = client.post("/api/recognize", content=raw, headers={**_auth(tokens), "Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and [x["label"] for x in r.json()["results"]] == ["obj004", "obj004"]
    buf = io.BytesIO()
    np.save(buf, v[None].astype(np.float32))
    r = client.post("/api/recognize", content=buf.getvalue(), headers={**_auth(tokens), "Content-Type": "application/x-npy"})
    assert r.status_code == 200 and r.json()["results"][0]["label"] == "obj004"
    # whole-request errors: a short message, never a traceback
    cases = [
        (raw[:-4], "application/octet-stream", 422, "whole number"),
        (b"", "application/octet-stream", 400, "empty"),
        (json.dumps({"vectors": []}), "application/json", 400, "no vectors"),
        (json.dumps({"vectors": [v.tolist()], "model": "timm:resnet50"}), "application/json", 409, "resnet50"),
        (json.dumps({"vectors": [v.tolist()], "k": 0}), "application/json", 422, "k=0"),
        ("{not json", "application/json", 400, "JSON"),
        (b"abc", "text/plain", 415, "content type"),
    ]
    for content, ctype, status, words in cases:
        r = client.post("/api/recognize", content=content, headers={**_auth(tokens), "Content-Type": ctype})
        assert r.status_code == status and words in r.json()["error"], (ctype, r.text)
    r = client.post("/api/recognize", files=[("x", ("a.png", b"", "image/png"))], data={"note": "x"}, headers=_auth(tokens))
    assert r.status_code == 400  # every input failed: the status is the failure's
    r = client.post("/api/recognize", files={"only": (None, b"a field, no file")}, headers=_auth(tokens))
    assert r.status_code == 400 and "no files" in r.json()["error"]
    r = client.post("/api/recognize", data={"a": "form"}, headers=_auth(tokens))
    assert r.status_code == 415


def test_an_index_built_with_the_learnt_head_answers_with_it_over_http(ws, tokens, recognition_setup, tmp_path):
    """``corral index build --using learnt`` -> the service names images with the
    curation loop's model: a known object's new pose by name, a never-labelled object "unknown"."""
    from corral.api.cli import main as cli_main

    root = tmp_path / "learnt-ws"
    shutil.copytree(ws, root)
    assert cli_main(["-q", "index", "build", "--workspace", str(root), "--using", "learnt"]) == 0
    assert LabelIndex.load(root).head is not None
    q = recognition_setup.queries
    with TestClient(create_app(Settings(workspace=root))) as c:
        known = [(lb, p) for lb in ("obj001", "obj007") for p in q[lb][:2]]
        files = [("images", (f"{lb}-{i}.png", p.read_bytes(), "image/png")) for i, (lb, p) in enumerate(known)]
        files += [("images", (f"stranger-{i}.png", p.read_bytes(), "image/png")) for i, p in enumerate(recognition_setup.unknown)]
        r = c.post("/api/recognize", files=files, headers=_auth(tokens))
        assert r.status_code == 200, r.text
        res = {x["input"]: x for x in r.json()["results"]}
        for i, (lb, _) in enumerate(known):
            got = res[f"{lb}-{i}.png"]
            assert got["using"] == "learnt" and got["label"] == lb and got["learnt"] == lb and got["confidence"] >= 0.97, got
        for i in range(len(recognition_setup.unknown)):
            got = res[f"stranger-{i}.png"]
            assert got["using"] == "learnt" and got["label"] is None and got["decision"] == "unknown", got
        st = c.get("/api/recognize/status", headers=_auth(tokens)).json()["loaded"]
        assert st["using"] == "learnt" and st["learnt_threshold"] >= 0.97


def test_oversized_upload_fails_alone(ws, tokens, recognition_setup):
    with TestClient(create_app(Settings(workspace=ws, max_upload_bytes=8000))) as c:
        big = recognition_setup.queries["obj007"][0].read_bytes()
        assert len(big) > 8000
        small = _small_jpeg(recognition_setup.queries["obj007"][0])
        assert len(small) < 8000
        r = c.post("/api/recognize", files=[("i", ("big.png", big, "image/png")), ("i", ("small.jpg", small, "image/jpeg"))], headers=_auth(tokens))
        assert r.status_code == 200
        big_r, small_r = r.json()["results"]
        assert big_r["status"] == 413 and "8000" in big_r["error"]
        assert small_r["status"] == 200 and small_r["label"] == "obj007"


def test_uploads_keep_their_large_body_limit(client, tokens, recognition_setup):
    """Issue 13, item 2: other routes take bodies of a few MB at most, but POST /api/recognize
    still takes a 6 MB upload (a file that is no image fails alone; the real one is named)."""
    real = recognition_setup.queries["obj007"][0]
    files = [("i", ("junk.png", b"\x89PNG" + b"\0" * (6 * 1024 * 1024), "image/png")), ("i", (real.name, real.read_bytes(), "image/png"))]
    r = client.post("/api/recognize", files=files, headers=_auth(tokens))
    assert r.status_code == 200, r.text[:300]
    junk, named = r.json()["results"]
    assert junk["status"] == 422 and named["status"] == 200 and named["label"] == "obj007"


def test_roles_service_recognises_but_cannot_label(client, tokens, ws):
    v = _vector_of(ws, "obj001")
    body = json.dumps({"vectors": [v.tolist()]})
    hdr = {"Content-Type": "application/json"}
    assert client.post("/api/recognize", content=body, headers=hdr).status_code == 401
    for role in ("service", "viewer", "curator"):
        assert client.post("/api/recognize", content=body, headers={**_auth(tokens, role), **hdr}).status_code == 200
    assign = {"indices": [0, 1], "label": "nope"}
    r = client.post("/api/maps/coil/actions/assign", json=assign, headers=_auth(tokens, "service"))
    assert r.status_code == 403 and "service" in r.json()["error"]
    assert client.get("/api/maps/coil/suggestions", headers=_auth(tokens, "service")).status_code == 403
    assert client.get("/api/maps/coil/suggestions", headers=_auth(tokens, "viewer")).json()["total"] == 0
    st = client.get("/api/recognize/status", headers=_auth(tokens, "service")).json()
    assert st["loaded"]["labels"] == 4 and st["loaded"]["images"] is True


def test_suggestions_are_listed_by_label_and_accepting_one_removes_it(client, tokens, ws):
    from corral.storage.labels import LabelStore
    from corral.storage.suggestions import suggest

    store = LabelStore.open(ws)
    obj010 = [i for i, lb in store.item_labels().items() if lb == "obj010"][:3]
    store.unlabel(obj010, user="u-curator")  # three points of the map are unlabelled again
    store.close()
    res = suggest(workspace=ws, map_name="coil", include_all=True)
    assert res.candidates == 3 and res.by_label == {"obj010": 3}
    body = client.get("/api/maps/coil/suggestions", headers=_auth(tokens, "viewer")).json()
    assert body["total"] == 3 and [g["label"] for g in body["groups"]] == ["obj010"]
    group = body["groups"][0]
    assert len(group["indices"]) == 3 and len(group["margins"]) == 3
    # accepting is the ordinary assign action on those points
    r = client.post("/api/maps/coil/actions/assign", json={"indices": group["indices"][:2], "label": "obj010"}, headers=_auth(tokens, "curator"))
    assert r.status_code == 200, r.text
    left = client.get("/api/maps/coil/suggestions", headers=_auth(tokens, "viewer")).json()
    assert left["total"] == 1 and left["groups"][0]["indices"] == group["indices"][2:]


# ------------------------------------------------------------------------------------------
# A real server on loopback


@contextmanager
def serve(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 60
    while not server.started:
        if not t.is_alive() or time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(30)


def load_test(url: str, make_request, *, count: int, seconds: float, concurrency: int = 8) -> dict:
    """Send up to ``count`` requests (stopping after ``seconds``) from ``concurrency`` threads."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    sent = [0]

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < stop:
                with lock:
                    if sent[0] >= count:
                        return
                    sent[0] += 1
                t0 = time.perf_counter()
                r = make_request(http)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if r.status_code != 200 or any(x["status"] != 200 for x in r.json()["results"]):
                        errors.append(r.text[:200])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "seconds": wall, "throughput_rps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3)}


def test_concurrent_image_requests_are_micro_batched_on_a_real_server(ws, tokens, recognition_setup):
    from corral.api.recognize_app import create_recognize_app
    from corral.storage.index_source import open_source

    app = create_recognize_app(open_source(ws), users_dir=ws, device="cpu", max_batch=16, max_wait_ms=20)
    imgs = [p.read_bytes() for ps in recognition_setup.queries.values() for p in ps]
    with serve(app) as url:
        stats = load_test(url, lambda h: h.post("/api/recognize", files=[("i", ("q.png", imgs[0], "image/png"))], headers=_auth(tokens)), count=24, seconds=60, concurrency=8)
        import httpx

        status = httpx.get(url + "/api/recognize/status", headers=_auth(tokens)).json()
        assert httpx.post(url + "/api/recognize", json={"vectors": [[1.0] * 4]}).status_code == 401  # tokens required here
    assert not stats["errors"] and stats["requests"] == 24
    assert status["batched_images"] == 24 and status["batches"] < 24, status  # requests shared batches
    print(f"\nimage load test: {stats['requests']} requests, {stats['throughput_rps']:.1f} img/s, p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms")


def test_hot_reload_from_s3_without_dropping_requests(ws, s3_server, tmp_path):
    import boto3

    from corral.api.recognize_app import create_recognize_app
    from corral.storage.index_build import update_index
    from corral.storage.index_source import open_source
    from corral.storage.labels import LabelStore
    from corral.storage.publish import publish

    work = tmp_path / "ws"
    shutil.copytree(ws, work, ignore=shutil.ignore_patterns("cache", "users.json"))
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="recog")
    url = "s3://recog/models/coil"
    v1 = publish(work, url, endpoint_url=s3_server).version
    probe = _vector_of(work, "obj001")
    app = create_recognize_app(open_source(url, endpoint_url=s3_server, cache_dir=tmp_path / "cache"), device="cpu", reload_interval_s=0.2)
    seen: list[tuple[str, str | None]] = []
    with serve(app) as base:
        import httpx

        stop = threading.Event()
        failures: list[str] = []

        def hammer() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/api/recognize", json={"vectors": [probe.tolist()]})
                    if r.status_code != 200:
                        failures.append(r.text[:200])
                    else:
                        x = r.json()
                        if x["version"] != x["results"][0]["version"]:
                            failures.append(f"answered by {x['results'][0]['version']} but reported {x['version']}")
                        seen.append((x["version"], x["results"][0]["label"]))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # a curator renames the label, the index is updated and a new version published
        store = LabelStore.open(Workspace(work))
        store.rename_label("obj001", "onion", user="curator")
        store.close()
        update_index(workspace=work)
        v2 = publish(work, url, endpoint_url=s3_server).version
        deadline = time.time() + 60
        while time.time() < deadline and not any(v == v2 for v, _ in seen):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        health = httpx.get(base + "/api/health").json()
    assert not failures, failures[:3]
    assert v1 != v2 and health["version"] == v2
    assert {lb for v, lb in seen if v == v1} == {"obj001"} and {lb for v, lb in seen if v == v2} == {"onion"}
    first_v2 = next(i for i, (v, _) in enumerate(seen) if v == v2)
    assert all(v == v2 for v, _ in seen[first_v2 + 10 :]), "once swapped, the new version answers"


def test_recognize_only_service_refuses_to_start_without_an_index(tmp_path, s3_server):
    import boto3

    from corral.api.recognize_app import create_recognize_app
    from corral.storage.index_source import open_source

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="empty-recog")
    app = create_recognize_app(open_source("s3://empty-recog/none", endpoint_url=s3_server, cache_dir=tmp_path), device="cpu")
    with pytest.raises(Exception, match="LATEST|no published version"):
        with TestClient(app):
            pass


def test_serve_recognize_only_needs_a_source(capsys, tmp_path):
    from corral.api.cli import main

    assert main(["serve", "--recognize-only"]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["serve", "--recognize-only", "--from", str(tmp_path / "nowhere")]) == 2
    assert "not an s3:// URL" in capsys.readouterr().err


def _run_in_thread(coro):
    """asyncio.run in a thread of its own: a browser test's Playwright keeps an event loop in the main thread."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_micro_batcher_groups_concurrent_items_and_keeps_failures_apart():
    import asyncio

    from corral.api.recognize_service import MicroBatcher

    sizes: list[int] = []

    def fn(items: list[int]) -> list:
        sizes.append(len(items))
        if -1 in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad {i}") if i == 13 else i * 2 for i in items]

    async def run() -> list:
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=50)
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(20)), return_exceptions=True)
        finally:
            await b.close()

    out = _run_in_thread(run())
    assert [o for i, o in enumerate(out) if i != 13] == [i * 2 for i in range(20) if i != 13]
    assert isinstance(out[13], ValueError)  # one item's error stays with that item
    assert max(sizes) == 8 and len(sizes) <= 4  # 20 concurrent items went in a few batches

    async def failing() -> list:
        b = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
        try:
            return await asyncio.gather(b.submit(-1), b.submit(1), return_exceptions=True)
        finally:
            await b.close()

    assert all(isinstance(o, RuntimeError) for o in _run_in_thread(failing()))
