"""Unchecked input is refused at the boundary with a short 4xx, never a 500: integers beyond 64 bits
on every route that takes them, NUL bytes in paths, names over 255 bytes, lying ``.npy`` headers.
The OpenAPI test keeps every integer input of every route bounded, so a new route cannot forget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from corral.api.inputs import INT64_MAX, INT64_MIN, read_npy

BIG = 2**64  # beyond 64 bits
I63 = 2**63  # one past the largest int64


@pytest.fixture
def raw_client(curation_ws):
    """The app with server errors answered as the server would (500), not raised into the test."""
    from corral.api.app import create_app
    from corral.api.settings import Settings

    with TestClient(create_app(Settings(workspace=curation_ws.root, allow_any_source=True)), raise_server_exceptions=False) as c:
        yield c


def _npy_claiming(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


CASES = [
    # `since` and other query integers
    ("GET", "/api/events", {"params": {"since": BIG}}),
    ("GET", "/api/events", {"params": {"since": I63}}),
    ("GET", "/api/maps/main/changes", {"params": {"since": BIG}}),
    ("GET", "/api/events/stream", {"params": {"since": BIG, "timeout": 0.1}}),
    ("GET", "/api/maps/main/search", {"params": {"q": "a", "limit": BIG}}),
    ("GET", "/api/maps/main/learn", {"params": {"limit": BIG}}),
    ("GET", f"/api/maps/main/atlas/0/{BIG}.jpg", {}),
    # point indices, on every route that takes them
    ("POST", "/api/maps/main/actions/assign", {"json": {"indices": [I63], "label": "x"}}),
    ("POST", "/api/maps/main/actions/assign", {"json": {"indices": [0], "exclude": [I63], "label": "x"}}),
    ("POST", "/api/maps/main/actions/assign", {"json": {"indices": [0], "label": "x", "since": BIG}}),
    ("POST", "/api/maps/main/actions/exclude", {"json": {"indices": [I63], "label": "x"}}),
    ("POST", "/api/maps/main/actions/unlabel", {"json": {"indices": [-I63 - 1]}}),
    ("POST", "/api/maps/main/actions/undo", {"json": {"since": BIG}}),
    ("POST", "/api/maps/main/points", {"json": {"indices": [I63]}}),
    ("POST", "/api/maps/main/split", {"json": {"indices": [I63, 1, 2, 3]}}),
    ("POST", "/api/maps/main/split", {"json": {"indices": [0, 1, 2, 3], "min_cluster_size": INT64_MAX}}),
    ("POST", "/api/maps/main/learn/accept", {"json": {"labels_version": 0, "label": "x", "indices": [I63]}}),
    ("POST", "/api/maps/main/learn/accept", {"json": {"labels_version": BIG, "label": "x", "indices": [0]}}),
    ("POST", "/api/maps/main/suggest", {"json": {"indices": [I63]}}),
    ("POST", "/api/maps/main/review", {"json": {"page_id": "p", "label": "x", "labels_version": 0, "shown_at": 0, "tiles": [{"index": I63, "row": 0, "col": 0, "order": 0, "decision": "match"}]}}),
    # NUL bytes and long names on their way to the file system
    ("POST", "/api/jobs", {"json": {"kind": "embed", "source": "/tmp/a\x00b"}}),
    ("POST", "/api/jobs", {"json": {"kind": "map", "options": {"name": "a\x00b"}}}),
    ("POST", "/api/jobs", {"json": {"kind": "map", "options": {"name": "é" * 150}}}),  # 150 characters, 300 bytes
    ("POST", "/api/jobs", {"json": {"kind": "map", "options": {"embeddings": "e" * 256}}}),
    ("GET", "/api/maps/" + "a" * 300, {}),
    ("GET", "/api/maps/" + "a" * 300 + "/points.bin", {}),
    ("POST", "/api/maps/" + "a" * 300 + "/actions/undo", {"json": {}}),
    # a .npy header that claims petabytes (or dimensions that multiply to the body's size)
    ("POST", "/api/recognize", {"role": "service", "content": _npy_claiming((10**15, 8)), "headers": {"Content-Type": "application/x-npy"}}),
    ("POST", "/api/recognize", {"role": "service", "content": _npy_claiming((-1, -2), b"\0" * 8), "headers": {"Content-Type": "application/x-npy"}}),
    ("POST", "/api/recognize", {"role": "service", "content": _npy_claiming((2**40, 2**40), b"\0" * 8), "headers": {"Content-Type": "application/x-npy"}}),
]


@pytest.mark.parametrize(("method", "url", "kw"), CASES, ids=[f"{m} {u[:40]} {str(k)[:60]}" for m, u, k in CASES])
def test_unchecked_input_is_a_short_4xx(raw_client, curation_ws, method, url, kw):
    kw = dict(kw)
    headers = {**curation_ws.auth(kw.pop("role", "curator")), **kw.pop("headers", {})}
    r = raw_client.request(method, url, headers=headers, **kw)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == r.status_code and body["error"] and len(r.text) < 800 and "Traceback" not in r.text
    assert "internal error" not in body["error"]


def test_nothing_was_written_by_the_refused_requests(raw_client, curation_ws):
    auth = curation_ws.auth("curator")
    for method, url, kw in CASES:
        if "/actions/" in url or "/learn/accept" in url:
            raw_client.request(method, url, headers=auth, **kw)
    assert raw_client.get("/api/events", headers=auth).json()["events"] == []
    assert raw_client.get("/api/jobs", headers=auth).json()["jobs"] == []


def _integer_schemas(schema, components, path=""):
    """Every integer schema inside ``schema`` (following $refs), with where it is."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            yield from _integer_schemas(components[name], components, f"{path}->{name}")
            return
        if schema.get("type") == "integer":
            yield path, schema
        for key, sub in schema.items():
            if key in ("properties", "$defs"):
                for k, v in sub.items():
                    yield from _integer_schemas(v, components, f"{path}.{k}")
            elif key in ("items", "additionalProperties"):
                yield from _integer_schemas(sub, components, f"{path}[]")
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
                for v in sub:
                    yield from _integer_schemas(v, components, path)


def test_every_integer_input_of_every_route_is_bounded_to_64_bits(client):
    doc = client.app.openapi()
    components = doc.get("components", {}).get("schemas", {})
    unbounded = []
    for url, ops in doc["paths"].items():
        for method, op in ops.items():
            found = []
            for p in op.get("parameters", []):
                found += list(_integer_schemas(p.get("schema", {}), components, f"{p['in']} {p['name']}"))
            for media in op.get("requestBody", {}).get("content", {}).values():
                found += list(_integer_schemas(media.get("schema", {}), components, "body"))
            for where, s in found:
                lo = s.get("minimum", s.get("exclusiveMinimum"))
                hi = s.get("maximum", s.get("exclusiveMaximum"))
                # the document may write the bounds as floats (2**63 - 1 becomes 2.0**63): compare as such
                if lo is None or hi is None or float(lo) < float(INT64_MIN) or float(hi) > float(INT64_MAX):
                    unbounded.append(f"{method.upper()} {url}: {where} ({lo}..{hi})")
    assert not unbounded, "integer inputs without 64-bit bounds (use corral.api.inputs.Int64 or Count):\n" + "\n".join(unbounded)


def test_read_npy_checks_the_header_against_the_bytes():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert read_npy(buf.getvalue()).tolist() == [[0, 1, 2], [3, 4, 5]]
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
    assert read_npy(buf.getvalue()).tolist() == [[0, 1, 2], [3, 4, 5]]
    from corral.api.errors import ApiError

    for bad in (_npy_claiming((10**15, 8)), _npy_claiming((3,), b"\0" * 8), b"\x93NUMPY\x01\x00garbage", b"not npy at all"):
        with pytest.raises(ApiError) as e:
            read_npy(bad)
        assert e.value.status == 422


LAX_INDICES = ["1", True, 1.0]  # lax parsing reads each of these as the point 1
INDEX_ROUTES = [
    ("/api/maps/main/actions/assign", lambda v: {"indices": [v], "label": "x"}),
    ("/api/maps/main/actions/assign", lambda v: {"indices": [0], "exclude": [v], "label": "x"}),
    ("/api/maps/main/actions/exclude", lambda v: {"indices": [v], "label": "x"}),
    ("/api/maps/main/actions/unlabel", lambda v: {"indices": [v]}),
    ("/api/maps/main/points", lambda v: {"indices": [v]}),
    ("/api/maps/main/split", lambda v: {"indices": [v, 2, 3, 4]}),
    ("/api/maps/main/suggest", lambda v: {"indices": [v]}),
    ("/api/maps/main/learn/accept", lambda v: {"labels_version": 0, "label": "x", "indices": [v]}),
    ("/api/maps/main/review", lambda v: {"page_id": "p", "label": "x", "labels_version": 0, "shown_at": 0, "tiles": [{"index": v, "row": 0, "col": 0, "order": 0, "decision": "match"}]}),
]


@pytest.mark.parametrize("value", LAX_INDICES, ids=repr)
@pytest.mark.parametrize(("url", "make"), INDEX_ROUTES, ids=[f"{u.rsplit('/', 1)[-1]}-{i}" for i, (u, _) in enumerate(INDEX_ROUTES)])
def test_point_indices_are_json_integers_not_strings_or_booleans(raw_client, curation_ws, url, make, value):
    r = raw_client.post(url, json=make(value), headers=curation_ws.auth("curator"))
    assert r.status_code == 422, (r.status_code, r.text)
    assert "valid integer" in r.json()["error"] and any(f in r.json()["error"] for f in ("indices.0", "exclude.0", "tiles.0.index"))


def test_a_point_index_given_as_text_or_a_boolean_labels_nothing(raw_client, curation_ws):
    auth = curation_ws.auth("curator")
    for value in LAX_INDICES:
        raw_client.post("/api/maps/main/actions/assign", json={"indices": [value], "label": "x"}, headers=auth)
    assert raw_client.get("/api/events", headers=auth).json()["events"] == []
    ok = raw_client.post("/api/maps/main/actions/assign", json={"indices": [1], "label": "x"}, headers=auth)
    assert ok.status_code == 200, ok.text
