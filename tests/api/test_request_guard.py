"""Issue 13, item 2: a request is authenticated before its body is read, a non-upload body is small,
and a slow or half-sent request times out, so unauthenticated or slow clients cannot stall the
server. The tests talk raw HTTP to a real server on loopback where the timing matters."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import LiveServer, free_port

ASSIGN = "/api/maps/main/actions/assign"
BIG = 61 * 1024 * 1024  # the size that stalled the server for 7 s


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (status, lower-cased headers, body); socket.timeout when none comes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:]))
    while len(body) < int(headers.get("content-length", 0)):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _closed(s: socket.socket) -> bool:
    """Whether the server has closed the connection (reads see the end)."""
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_an_unauthenticated_body_is_refused_before_it_is_read(live_server):
    """A 61 MB body without a token gets its 401 after the first 64 KiB, not after all of it
    has arrived and been parsed; the connection is closed so the rest is not read either."""
    with _connect(live_server.port) as s:
        s.sendall(_head("POST", ASSIGN, {"Content-Type": "application/json", "Content-Length": str(BIG)}))
        s.sendall(b'{"label": "x", "indices": [' + b"0," * 32768)
        t0 = time.perf_counter()
        status, headers, body = _response(s)  # before the guard: no answer until 61 MB arrive
        assert status == 401, body
        assert json.loads(body)["status"] == 401 and "sign in" in json.loads(body)["error"]
        assert headers.get("connection") == "close" and time.perf_counter() - t0 < 2
        assert _closed(s)


def _health_ms(port: int) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=30) as r:
        assert r.status == 200
    return (time.perf_counter() - t0) * 1000


def test_health_answers_while_unauthenticated_61mb_bodies_arrive(live_server):
    """Three clients send whole 61 MB JSON bodies without a token; /api/health keeps answering
    within a second meanwhile (they stalled it for 23 s when the bodies were parsed first)."""
    body = b'{"label": "x", "indices": [' + b"0," * (BIG // 2 - 20) + b"0]}"
    answers: list[int] = []

    def send() -> None:
        try:
            with _connect(live_server.port, timeout=60) as s:
                s.sendall(_head("POST", ASSIGN, {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body)
                answers.append(_response(s)[0])
        except (ConnectionError, OSError):  # the server answered and closed while we were sending
            answers.append(-1)

    senders = [threading.Thread(target=send) for _ in range(3)]
    for t in senders:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in senders):
        worst = max(worst, _health_ms(live_server.port))
        time.sleep(0.05)
    for t in senders:
        t.join()
    worst = max(worst, _health_ms(live_server.port))
    assert worst < 1000, f"/api/health took {worst:.0f} ms while the bodies arrived"
    assert all(a in (401, -1) for a in answers), answers


@pytest.fixture
def default_client(curation_ws):
    """The app with its default limits (the ``client`` fixture lowers them)."""
    from corral.api.app import create_app
    from corral.api.settings import Settings

    with TestClient(create_app(Settings(workspace=curation_ws.root))) as c:
        yield c


def _indices_json(size: int) -> bytes:
    return b'{"label": "x", "indices": [' + b"0," * (size // 2) + b"0]}"


def test_a_label_action_body_over_the_small_limit_gets_413(default_client, curation_ws):
    """Label actions need kilobytes: a 5 MB one is refused with a short JSON 413, whether it says
    its length or arrives chunked without one."""
    body = _indices_json(5 * 1024 * 1024)
    headers = {**curation_ws.auth("curator"), "Content-Type": "application/json"}
    r = default_client.post(ASSIGN, content=body, headers=headers)
    assert r.status_code == 413 and r.json()["status"] == 413 and "limit" in r.json()["error"], r.text[:300]
    assert len(r.content) < 300

    def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    r = default_client.post(ASSIGN, content=chunks(), headers=headers)
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["status"] == 413, r.text[:300]
    # a real action on a large selection is well within the limit
    r = default_client.post(ASSIGN, json={"indices": list(range(curation_ws.n)), "label": "x"}, headers=curation_ws.auth("curator"))
    assert r.status_code == 200, r.text[:300]


def test_the_sign_in_route_takes_only_a_token_sized_body(default_client, curation_ws):
    r = default_client.post("/api/session", content=json.dumps({"token": "x" * 100_000}), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413
    assert default_client.post("/api/session", json={"token": curation_ws.tokens["viewer"]}).status_code == 200


def test_a_half_sent_body_times_out(curation_ws):
    """A signed-in client that announces 1,000 bytes and sends 10 gets 408 when the body deadline
    passes, and the connection is closed; other requests are answered meanwhile."""
    with LiveServer(curation_ws.root, body_timeout_s=1.0) as srv, _connect(srv.port) as s:
        s.sendall(_head("POST", ASSIGN, {**curation_ws.auth("curator"), "Content-Type": "application/json", "Content-Length": "1000"}) + b'{"label": ')
        assert _health_ms(srv.port) < 1000
        t0 = time.perf_counter()
        status, headers, body = _response(s)  # before the deadline existed: held forever
        assert status == 408 and json.loads(body)["status"] == 408, body
        assert time.perf_counter() - t0 < 3 and headers.get("connection") == "close"
        assert _closed(s)


@contextmanager
def _corral_server(app, **options):
    """The app under uvicorn as `corral serve` configures it, in a thread."""
    import uvicorn

    from corral.api.server import server_config

    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_connections_slow_to_send_their_headers_are_closed(curation_ws):
    """A connection that sends half a request line (or nothing) is closed after the header
    timeout; uvicorn alone holds such connections for ever. Quick requests still keep alive."""
    from corral.api.app import create_app
    from corral.api.settings import Settings

    with _corral_server(create_app(Settings(workspace=curation_ws.root)), header_timeout_s=0.5) as port:
        idle, partial, quick = _connect(port), _connect(port), _connect(port)
        partial.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        quick.sendall(_head("GET", "/api/health", {}))
        assert _response(quick)[0] == 200
        quick.sendall(_head("GET", "/api/health", {}))  # the same connection, a second request
        assert _response(quick)[0] == 200
        t0 = time.perf_counter()
        assert _closed(partial) and _closed(idle)
        assert time.perf_counter() - t0 < 3
        for s in (idle, partial, quick):
            s.close()


def _bitmap(indices, n: int) -> str:
    """A packed selection as the viewer sends it: one bit per point, least significant first."""
    import base64

    import numpy as np

    bits = np.zeros(n, np.uint8)
    bits[list(indices)] = 1
    return "bitmap:" + base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()


def _label_sizes(client, auth) -> dict[str, int]:
    return {lab["name"]: lab["count"] for lab in client.get("/api/labels", headers=auth).json()["labels"]}


def test_a_large_selection_travels_as_a_bitmap_and_big_json_lists_are_refused(default_client, curation_ws):
    """JSON is parsed on the server's event loop, where every other request waits meanwhile: 900,000
    indices as JSON (4 MB, under the old limit) held it for a quarter of a second. A selection now
    goes packed, one bit per point, and a JSON body over 1 MiB gets 413 before it is read."""
    auth = curation_ws.auth("curator")
    n = curation_ws.n
    big_list = b'{"label": "x", "indices": [' + b",".join(str(i % n).encode() for i in range(600_000)) + b"]}"
    assert 1024 * 1024 < len(big_list) < 4 * 1024 * 1024
    r = default_client.post(ASSIGN, content=big_list, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    # every point but the first ten named, as one packed selection minus two excluded points
    chosen = range(10, n)
    body = {"label": "everything", "indices": _bitmap(chosen, n), "exclude": [20, 21]}
    assert len(json.dumps(body)) < n  # well under a byte a point
    r = default_client.post(ASSIGN, json=body, headers=auth)
    assert r.status_code == 200, r.text[:300]
    assert _label_sizes(default_client, auth)["everything"] == len(chosen) - 2
    r = default_client.post("/api/maps/main/actions/unlabel", json={"indices": _bitmap(range(100, 200), n)}, headers=auth)
    assert r.status_code == 200, r.text[:300]
    assert _label_sizes(default_client, auth)["everything"] == len(chosen) - 2 - 100
    # a bitmap that reaches past the map, or is not base64, is a short 4xx that says so
    r = default_client.post(ASSIGN, json={"label": "x", "indices": _bitmap([n + 3], n + 8)}, headers=auth)
    assert r.status_code == 400 and f"point index {n + 3} is outside this map" in r.json()["error"]
    for bad in ("bitmap:A", "bitmap:!!!!", "AAAA"):
        r = default_client.post(ASSIGN, json={"label": "x", "indices": bad}, headers=auth)
        assert r.status_code == 422 and len(r.content) < 1000, (bad, r.text[:300])


def test_health_answers_while_signed_in_clients_send_bodies_at_the_limit(curation_ws):
    """Three curators each send a label action at the body limit, a byte at a time at the end:
    /api/health answers while all three are in flight, and each action is then applied."""
    from corral.api.settings import Settings

    limit = Settings(workspace=curation_ws.root).max_body_bytes
    n = curation_ws.n
    with LiveServer(curation_ws.root) as srv:
        sockets = []
        for k in range(3):
            head = json.dumps({"label": f"team{k}", "indices": _bitmap(range(k * 100, k * 100 + 50), n)}).encode()[:-1]
            body = head + b" " * (limit - len(head) - 1) + b"}"  # JSON whitespace: the body is at the limit
            assert len(body) == limit
            s = _connect(srv.port, timeout=60)
            s.sendall(_head("POST", ASSIGN, {**curation_ws.auth("curator"), "Content-Type": "application/json", "Content-Length": str(len(body))}) + body[:-1])
            sockets.append((s, body[-1:]))
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/api/health", timeout=30) as r:
            assert r.status == 200  # answered while every body still lacks its last byte
        for s, rest in sockets:
            s.sendall(rest)
        answers = []
        for s, _ in sockets:
            with s:
                answers.append(_response(s)[0])
        assert answers == [200, 200, 200]
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/api/labels", headers=curation_ws.auth("viewer"))
        with urllib.request.urlopen(req, timeout=30) as r:
            sizes = {lab["name"]: lab["count"] for lab in json.loads(r.read())["labels"]}
        assert all(sizes[f"team{k}"] == 50 for k in range(3)), sizes
