"""Map data: the binary points and labels, their size on the wire, caching, search, atlases."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.parquet as pq

from corral.api.binpack import unpack


def _points(client, auth):
    meta = client.get("/api/maps/main", headers=auth).json()
    r = client.get(meta["points_url"], headers=auth)
    assert r.status_code == 200
    return meta, r


def test_map_list_and_meta(client, curation_ws):
    auth = curation_ws.auth("viewer")
    maps = client.get("/api/maps", headers=auth).json()
    assert maps["default"] == "main"
    assert maps["maps"][0]["n"] == curation_ws.n
    meta = client.get("/api/maps/main", headers=auth).json()
    assert meta["n"] == curation_ws.n and len(meta["bounds"]) == 4
    assert {lv["lod"] for lv in meta["atlas"]} == {0, 1}


def test_points_binary_matches_parquet(client, curation_ws):
    meta, r = _points(client, curation_ws.auth("viewer"))
    header, cols = unpack(r.content)
    assert header["n"] == curation_ws.n and header["etag"] == meta["etag"]
    raw = pq.read_table(curation_ws.root / "maps" / "main" / "points.parquet")
    # every point is there once, at its position (within the uint16 quantisation step)
    ids = np.asarray(raw.column("id").to_pylist())
    x = raw.column("x").to_numpy()
    lo_x, lo_y, hi_x, hi_y = header["bounds"]
    got_x = cols["x"].astype(np.float64) / 65535 * (hi_x - lo_x) + lo_x
    details = client.post("/api/maps/main/points", headers=curation_ws.auth("viewer"), json={"indices": list(range(200))}).json()["points"]
    pos = {i: k for k, i in enumerate(ids)}
    step = (hi_x - lo_x) / 65535
    for p in details:
        k = pos[p["id"]]
        assert abs(got_x[p["index"]] - x[k]) <= step
        assert cols["cluster"][p["index"]] == raw.column("cluster")[k].as_py() + 1
    # the grid: cells cover every point exactly once
    starts = cols["cell_start"]
    assert starts[0] == 0 and starts[-1] == curation_ws.n and np.all(np.diff(starts.astype(np.int64)) >= 0)


def test_wire_size_under_16_bytes_per_point(client, curation_ws):
    auth = curation_ws.auth("viewer")
    _, r = _points(client, auth)
    assert r.headers["content-encoding"] == "gzip"
    lab = client.get("/api/maps/main/labels.bin", headers=auth)
    assert lab.headers["content-encoding"] == "gzip"
    # httpx inflates for us; recompress what came to count the bytes that crossed the wire
    wire = len(gzip.compress(r.content, 6)) + len(gzip.compress(lab.content, 1))
    assert wire / curation_ws.n <= 16, f"{wire / curation_ws.n:.1f} bytes per point"


def test_points_cache_headers_and_304(client, curation_ws):
    auth = curation_ws.auth("viewer")
    meta, r = _points(client, auth)
    assert "immutable" in r.headers["cache-control"]
    etag = r.headers["etag"]
    again = client.get(meta["points_url"], headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304
    assert "no-cache" in client.get("/api/maps/main/points.bin", headers=auth).headers["cache-control"]


def test_map_rebuilt_changes_etag_and_refuses_stale_actions(client, curation_ws):
    import os

    auth = curation_ws.auth("curator")
    old = client.get("/api/maps/main", headers=auth).json()["etag"]
    p = curation_ws.root / "maps" / "main" / "map.json"
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    new = client.get("/api/maps/main", headers=auth).json()["etag"]
    assert new != old
    r = client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": [0, 1], "label": "x", "etag": old})
    assert r.status_code == 409 and "rebuilt" in r.json()["error"]


def test_search_by_file_name_and_label(client, curation_ws):
    auth = curation_ws.auth("curator")
    res = client.get("/api/maps/main/search", params={"q": "obj2__"}, headers=auth).json()
    assert res["total"] == 12 and res["by_name"] == 12
    pts = client.post("/api/maps/main/points", headers=auth, json={"indices": res["indices"]}).json()["points"]
    assert all(p["name"].startswith("obj2__") for p in pts)
    client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": res["indices"][:5], "label": "Cup"})
    by_label = client.get("/api/maps/main/search", params={"q": "cup"}, headers=auth).json()
    assert by_label["by_label"] == 5


def test_clusters_with_exemplars_as_points(client, curation_ws):
    res = client.get("/api/maps/main/clusters", headers=curation_ws.auth("viewer")).json()
    assert len(res["clusters"]) == 7
    assert all(0 <= i < curation_ws.n for c in res["clusters"] for i in c["exemplars"])


def test_atlas_tiles_are_real_thumbnails_and_cached(client, curation_ws):
    from PIL import Image
    import io

    auth = curation_ws.auth("viewer")
    meta = client.get("/api/maps/main", headers=auth).json()
    # find the atlas holding the first image item
    idx = client.get("/api/maps/main/search", params={"q": "obj1__0.png"}, headers=auth).json()["indices"][0]
    per = meta["atlas"][0]["per"]
    r = client.get(f"/api/maps/main/atlas/0/{idx // per}.jpg", params={"v": meta["etag"]}, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "immutable" in r.headers["cache-control"]
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (meta["atlas"][0]["size"],) * 2
    cell = meta["atlas"][0]["cell"]
    slot = idx % per
    cols = meta["atlas"][0]["size"] // cell
    tile = np.asarray(im.convert("L").crop(((slot % cols) * cell, (slot // cols) * cell, (slot % cols + 1) * cell, (slot // cols + 1) * cell)))
    assert tile.std() > 10, "the cell of a real image should not be flat"
    cached = list((curation_ws.root / "cache" / "atlas").rglob("*.jpg"))
    assert cached
    assert client.get(f"/api/maps/main/atlas/0/{10**6}.jpg", headers=auth).status_code == 404
    assert client.get("/api/maps/main/atlas/7/0.jpg", headers=auth).status_code == 404


def test_unknown_map_is_404_with_hint(client, curation_ws):
    r = client.get("/api/maps/nope", headers=curation_ws.auth("viewer"))
    assert r.status_code == 404 and "corral map" in r.json()["error"]


def test_suggestions_need_an_index_then_name_the_selection(client, curation_ws):
    from corral.storage.index_build import build_index

    auth = curation_ws.auth("curator")
    by_obj = {o: client.get("/api/maps/main/search", params={"q": f"obj{o}__"}, headers=auth).json()["indices"] for o in (1, 2, 3, 4)}
    r = client.post("/api/maps/main/suggest", headers=auth, json={"indices": by_obj[1]}).json()
    assert r["available"] is False and r["suggestions"] == []
    # label three objects (all but the last two of each), build the index, ask about the rest
    for o, name in ((1, "cup"), (2, "duck"), (3, "car")):
        client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": by_obj[o][:-2], "label": name})
    build_index(workspace=curation_ws.root)
    r = client.post("/api/maps/main/suggest", headers=auth, json={"indices": by_obj[2][-2:]}).json()
    assert r["available"] is True and r["asked"] == 2
    assert r["suggestions"][0]["label"] == "duck" and r["suggestions"][0]["votes"] == 2 and r["suggestions"][0]["score"] > 0
    mixed = client.post("/api/maps/main/suggest", headers=auth, json={"indices": by_obj[1][-2:] + by_obj[3][-2:], "top": 5}).json()
    assert {s["label"] for s in mixed["suggestions"]} == {"cup", "car"} and sum(s["votes"] for s in mixed["suggestions"]) == 4


def test_split_answers_point_indices(client, curation_ws):
    auth = curation_ws.auth("curator")
    sel = client.get("/api/maps/main/search", params={"q": "obj"}, headers=auth).json()["indices"]  # 4 objects, 12 each
    r = client.post("/api/maps/main/split", headers=auth, json={"indices": sel, "min_cluster_size": 5})
    assert r.status_code == 200, r.text
    subs = r.json()["subclusters"]
    assert sorted(i for s in subs for i in s["indices"]) == sorted(sel)
    assert len([s for s in subs if not s.get("noise")]) == 4  # the four tight blobs come apart
    assert client.post("/api/maps/main/split", headers=auth, json={"indices": sel[:3]}).status_code == 400
    assert client.post("/api/maps/main/split", headers=curation_ws.auth("viewer"), json={"indices": sel}).status_code == 403
