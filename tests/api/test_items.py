"""Thumbnails and originals: made once, cached, served with cache headers; no path ever escapes."""

from __future__ import annotations

import io
import urllib.request

import pytest
from PIL import Image


def test_thumbnail_is_made_once_and_cached(client, curation_ws):
    auth = curation_ws.auth("viewer")
    item = curation_ws.image_ids[0]
    r = client.get(f"/api/items/{item}/thumb", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age=31536000" in r.headers["cache-control"]
    im = Image.open(io.BytesIO(r.content))
    assert max(im.size) == 128
    cached = curation_ws.root / "cache" / "thumbs" / "128" / item[:2] / f"{item}.jpg"
    assert cached.is_file()
    mtime = cached.stat().st_mtime_ns
    assert client.get(f"/api/items/{item}/thumb", headers=auth).content == r.content
    assert cached.stat().st_mtime_ns == mtime  # served from the cache, not made again
    small = Image.open(io.BytesIO(client.get(f"/api/items/{item}/thumb", headers=auth, params={"size": 48}).content))
    assert max(small.size) == 48
    assert client.get(f"/api/items/{item}/thumb", headers=auth, params={"size": 5000}).status_code == 400


def test_thumbnail_sizes_snap_to_a_few_steps(client, curation_ws):
    """Every size a viewer may ask for makes at most a handful of cached files per item (issue 13,
    item 10): a request gets the smallest step at least as large."""
    auth = curation_ws.auth("viewer")
    item = curation_ws.image_ids[1]
    for size in range(16, 513, 7):
        r = client.get(f"/api/items/{item}/thumb", headers=auth, params={"size": size})
        assert r.status_code == 200
    made = [p for p in (curation_ws.root / "cache" / "thumbs").glob(f"*/{item[:2]}/{item}.jpg")]
    assert 1 < len(made) <= 11, len(made)


def test_original_is_served_for_the_large_view(client, curation_ws):
    auth = curation_ws.auth("viewer")
    item, path = curation_ws.image_ids[3], curation_ws.image_paths[3]
    r = client.get(f"/api/items/{item}/image", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == path.read_bytes()
    info = client.get(f"/api/items/{item}", headers=auth).json()
    assert info["name"] == path.name and info["width"] == 128
    # a viewer is not told where the file lies on the server (issue 13, item 4); a curator is
    assert "uri" not in info and str(path.parent) not in str(info)
    assert client.get(f"/api/items/{item}", headers=curation_ws.auth("curator")).json()["uri"] == str(path)


def test_item_without_an_image_is_404(client, curation_ws):
    auth = curation_ws.auth("viewer")
    assert client.get(f"/api/items/{'ab' * 16}/thumb", headers=auth).status_code == 404
    assert client.get(f"/api/items/{'ab' * 16}/image", headers=auth).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/items/%2Fetc%2Fpasswd/thumb",
        "/api/items/..%5C..%5Cusers.json/image",
        "/api/items/users.json/image",
        "/api/maps/..%2Fusers.json/points.bin",
        "/api/maps/..%2F..%2Fetc/atlas/0/0.jpg",
        "/api/maps/main/atlas/0/..%2F..%2F..%2Fusers.json",
        "/src/..%2F..%2Fapi%2Fapp.py",
        "/src/../../users.json",
        "/src/%2e%2e/%2e%2e/pyproject.toml",
    ],
)
def test_traversal_attempts_get_nothing(live_server, curation_ws, path):
    """Raw requests against the real server (a client library would normalise the dots away)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=10)
    conn.request("GET", path, headers=curation_ws.auth("admin"))
    res = conn.getresponse()
    body = res.read()
    conn.close()
    assert res.status in (400, 404, 422), (path, res.status)
    assert b"root:" not in body and b"token_sha256" not in body and b"create_app" not in body and b"[project]" not in body


def test_viewer_static_files_are_served(live_server):
    with urllib.request.urlopen(f"{live_server.url}/src/main.js") as r:
        assert r.status == 200 and "javascript" in r.headers["content-type"]
    with urllib.request.urlopen(f"{live_server.url}/") as r:
        html = r.read().decode()
        assert "Content-Security-Policy" in r.headers and "/viewer.js?v=" in html
