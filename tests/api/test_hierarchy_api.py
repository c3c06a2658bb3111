"""The cluster hierarchy route: a map's condensed tree in the viewer's point order, cached per
version, readable by every role that reads the map, and a short 404 where there is none."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from corral.api.binpack import unpack
from corral.pipeline.hierarchy import node_members
from tests.api.hierarchy_ws import nested_curation_ws


@pytest.fixture
def nested(tmp_path):
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.settings import Settings

    cur, blob = nested_curation_ws(tmp_path / "ws")
    with TestClient(create_app(Settings(workspace=cur.root))) as c:
        yield c, cur, blob


def members(cols, node: int, cluster: np.ndarray) -> np.ndarray:
    """A node's point indices by the rule the viewer follows (corral.pipeline.hierarchy)."""
    return node_members(dict(cols), node, cluster)


def test_hierarchy_in_point_order_with_known_nesting(nested):
    client, cur, blob = nested
    auth = cur.auth("viewer")
    meta = client.get("/api/maps/main", headers=auth).json()
    assert meta["hierarchy_url"] == f"/api/maps/main/hierarchy.bin?v={meta['etag']}"
    r = client.get(meta["hierarchy_url"], headers=auth)
    assert r.status_code == 200 and r.headers["etag"] == f'"{meta["etag"]}"' and "immutable" in r.headers["cache-control"]
    header, cols = unpack(r.content)
    assert header["n"] == cur.n and header["etag"] == meta["etag"] and header["nodes"] == cols["node_parent"].size
    points = unpack(client.get(meta["points_url"], headers=auth).content)[1]
    cluster = points["cluster"].astype(np.int64) - 1  # the points column is cluster + 1
    # the generated blob of every point index, through the ids
    row_of = {i: k for k, i in enumerate(pq.read_table(cur.root / "maps" / "main" / "points.parquet").column("id").to_pylist())}
    blob_at = blob[[row_of[i] for i in client.app.state.ctx.maps.get("main").ids.to_pylist()]]
    assert cols["cluster_node"].size == 4
    for c in range(4):
        node = int(cols["cluster_node"][c])
        assert cols["node_cluster"][node] == c
        # a flat cluster's node: its own items (leaving the tree inside it, plus handed-out noise)
        assert np.array_equal(members(cols, node, cluster), np.flatnonzero(cluster == c))
        # its parent: the pair of blobs it was generated in, and nothing of the other pair
        parent = int(cols["node_parent"][node])
        up = members(cols, parent, cluster)
        b = int(np.bincount(blob_at[cluster == c]).argmax())
        assert set(blob_at[up].tolist()) == {b, b ^ 1}
        assert cols["node_parent"][parent] == 0


def test_revalidation_and_roles(nested):
    client, cur, _ = nested
    meta = client.get("/api/maps/main", headers=cur.auth("viewer")).json()
    plain = client.get("/api/maps/main/hierarchy.bin", headers=cur.auth("curator"))
    assert plain.status_code == 200 and plain.headers["cache-control"] == "private, no-cache"
    again = client.get("/api/maps/main/hierarchy.bin", headers=cur.auth("viewer") | {"If-None-Match": f'"{meta["etag"]}"'})
    assert again.status_code == 304
    assert client.get("/api/maps/main/hierarchy.bin").status_code == 401
    assert client.get("/api/maps/main/hierarchy.bin", headers=cur.auth("service")).status_code == 403


def test_a_map_without_a_hierarchy_says_so(client, curation_ws):
    """Maps made before the tree was kept still load; the route explains what to do."""
    auth = curation_ws.auth("viewer")
    assert client.get("/api/maps/main", headers=auth).json()["hierarchy_url"] is None
    r = client.get("/api/maps/main/hierarchy.bin", headers=auth)
    assert r.status_code == 404 and "corral map" in r.json()["error"] and len(r.text) < 400
    ghost = client.get("/api/maps/no-such-map/hierarchy.bin", headers=auth)
    assert ghost.status_code == 404 and "no-such-map" in ghost.json()["error"]
