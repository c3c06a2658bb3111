"""The map folder format: written and read back with the types the contract names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corral.storage.maps import (
    CLUSTER_SCHEMA,
    POINT_SCHEMA,
    clusters_table,
    list_maps,
    points_table,
    read_map,
    read_state,
    write_map,
)
from corral.storage.workspace import Workspace, WorkspaceError
from tests.conftest import REPO


def _write(ws: Workspace, name: str, n: int = 5, dims: int = 0) -> None:
    rng = np.random.default_rng(0)
    pts = points_table(
        ids=[f"id{i}" for i in range(n)],
        xy=rng.normal(size=(n, 2)),
        cluster=np.array([0, 0, 1, 1, -1][:n]),
        probability=np.linspace(0, 1, n),
        outlier_score=np.linspace(1, 0, n),
        is_new=np.zeros(n, bool),
        cluster_coords=rng.normal(size=(n, dims)) if dims else None,
    )
    cl = clusters_table(cluster=np.array([0, 1]), size=np.array([2, 2]), exemplars=[["id0", "id1"], ["id3"]], cohesion=np.array([0.9, 0.5]))
    write_map(ws.map_dir(name), points=pts, clusters=cl, meta={"name": name, "seed": 0}, state={"core_distance": np.arange(n, dtype=float)})


def test_round_trip_keeps_contract_types(tmp_path):
    ws = Workspace(tmp_path)
    _write(ws, "m", dims=3)
    m = read_map(ws, "m")
    for f in POINT_SCHEMA:
        assert m.points.schema.field(f.name).type == f.type, f.name
    assert [c for c in m.points.column_names if c.startswith("c") and c[1:].isdigit()] == ["c0", "c1", "c2"]
    assert m.points.schema.field("c0").type == pa.float32()
    assert m.clusters.schema == CLUSTER_SCHEMA
    assert m.clusters.column("exemplars").to_pylist() == [["id0", "id1"], ["id3"]]
    assert m.cluster_coords().shape == (5, 3)
    assert m.meta["seed"] == 0
    np.testing.assert_array_equal(read_state(m.path)["core_distance"], np.arange(5.0))
    # Readable without our code: plain pyarrow and json.
    assert pq.read_table(m.path / "points.parquet").num_rows == 5
    assert json.loads((m.path / "map.json").read_text())["name"] == "m"


def test_no_clustering_space_means_no_c_columns(tmp_path):
    ws = Workspace(tmp_path)
    _write(ws, "flat")
    m = read_map(ws, "flat")
    assert m.cluster_coords() is None
    assert "c0" not in m.points.column_names


def test_list_and_newest(tmp_path):
    ws = Workspace(tmp_path)
    assert list_maps(ws) == []
    _write(ws, "a")
    _write(ws, "b")
    old = ws.map_dir("a") / "map.json"
    os.utime(old, (1, 1))
    assert list_maps(ws) == ["a", "b"]
    assert read_map(ws).name == "b"
    # A folder without map.json (an interrupted write) is not a map.
    (ws.maps_dir / "half").mkdir()
    (ws.maps_dir / "half" / "points.parquet").write_bytes(b"")
    assert list_maps(ws) == ["a", "b"]


def test_missing_map_errors_name_the_fix(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(WorkspaceError, match="corral map"):
        read_map(ws)
    _write(ws, "a")
    with pytest.raises(WorkspaceError, match=r"no map 'zzz'.*have: a"):
        read_map(ws, "zzz")


def test_storage_maps_imports_nothing_of_the_pipeline():
    code = "import sys, corral.storage.maps; bad = [m for m in sys.modules if (m.split('.')[0] in ('umap', 'torch', 'faiss') or m.split('.')[:2] in (['corral', 'pipeline'], ['corral', 'api']))]; print(bad); sys.exit(1 if bad else 0)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
