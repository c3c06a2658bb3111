"""The map on real data: COIL-20 embedded with the pretrained model, mapped once per session
(quality; skipped without the evaluation set), and the generated object set (the map's contract
and splitting, which run everywhere)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score

from corral.pipeline.mapping import MapConfig, build_map, recluster, update_map
from corral.pipeline.project import UmapParams
from corral.storage.maps import POINT_SCHEMA, read_map
from corral.storage.workspace import Workspace, atomic_write_table, embedding_table
from tests.conftest import shared_data

#: Held out of the first map and embedded later: (object, pose numbers).
HELD_OUT = {"obj03": (5, 23, 41, 59), "obj12": (10, 28, 46, 64)}


def _object_of(ws: Path) -> dict[str, str]:
    t = Workspace(ws).items()
    return {i: Path(u).parent.name for i, u in zip(t.column("id").to_pylist(), t.column("uri").to_pylist())}


def _held_out_file(uri: str) -> bool:
    p = Path(uri)
    poses = HELD_OUT.get(p.parent.name, ())
    return any(p.stem.endswith(f"__{k}") for k in poses)


@pytest.fixture(scope="session")
def coil20_map(coil20_workspace):
    """The default map of the COIL-20 workspace."""
    res = build_map(workspace=coil20_workspace)
    return res, read_map(coil20_workspace, res.name)


@pytest.fixture(scope="session")
def objects_map(generated_workspace, tmp_path_factory):
    """The default map of the generated object set (8 objects x 36 poses), in its own copy."""
    ws = tmp_path_factory.mktemp("objects-map") / "ws"
    shutil.copytree(generated_workspace, ws, ignore=shutil.ignore_patterns("maps", "cache", "labels.sqlite*", "users.json"))
    res = build_map(workspace=ws)
    return ws, res, read_map(ws, res.name)


@pytest.fixture(scope="session")
def partial_workspace(coil20_workspace, tmp_path_factory) -> Path:
    """COIL-20 minus a few poses of two objects, mapped; the poses are embedded later by a test."""
    src = Workspace(coil20_workspace).default_embedding_set()
    ws = tmp_path_factory.mktemp("coil20-partial")
    dst = Workspace(ws).embedding_set(src.name)
    dst.path.mkdir(parents=True)
    shutil.copy(src.sidecar_path, dst.sidecar_path)
    items = src.items()
    keep = [not _held_out_file(u) for u in items.column("uri").to_pylist()]
    assert sum(keep) == items.num_rows - 8
    items = items.filter(pa.array(keep))
    ids, vecs = src.load()
    wanted = set(items.column("id").to_pylist())
    rows = [i for i, x in enumerate(ids) if x in wanted]
    emb_path, items_path = dst.shard_paths(0)
    atomic_write_table(emb_path, embedding_table([ids[i] for i in rows], vecs[rows]))
    atomic_write_table(items_path, items)
    cfg = MapConfig(umap=UmapParams(n_epochs=200))
    build_map(workspace=ws, config=cfg)
    return ws


def test_coil20_clusters_match_the_objects(coil20_map, coil20_workspace):
    res, m = coil20_map
    obj = _object_of(coil20_workspace)
    ids = m.points.column("id").to_pylist()
    labels = m.points.column("cluster").to_numpy()
    truth = [obj[i] for i in ids]
    assert res.points == 1440
    assert adjusted_rand_score(truth, labels) >= 0.8
    assert np.mean(labels >= 0) >= 0.95
    assert 15 <= res.clusters <= 30


def test_the_generated_objects_are_the_clusters(objects_map):
    """The generated set keeps its promise to the tests built on it: each drawn object is one
    cluster to the pretrained model."""
    ws, res, m = objects_map
    obj = _object_of(ws)
    truth = [obj[i] for i in m.points.column("id").to_pylist()]
    assert res.clusters == 8 and adjusted_rand_score(truth, m.points.column("cluster").to_numpy()) >= 0.9


def test_map_folder_follows_the_contract(objects_map):
    _, res, m = objects_map
    for f in POINT_SCHEMA:
        assert m.points.schema.field(f.name).type == f.type
    dims = m.meta["params"]["cluster_dims"]
    assert res.points == 288 and dims == 10 and m.cluster_coords().shape == (288, 10)
    assert not m.points.column("is_new").to_numpy(zero_copy_only=False).any()
    p = m.points.column("probability").to_numpy()
    o = m.points.column("outlier_score").to_numpy()
    assert (p >= 0).all() and (p <= 1).all() and (o >= 0).all() and (o <= 1).all()
    # Clusters: sizes add up, exemplars are members, cohesion is a cosine-like score.
    cl = m.clusters.to_pydict()
    labels = m.points.column("cluster").to_numpy()
    assert sum(cl["size"]) == int(np.sum(labels >= 0))
    ids = np.array(m.points.column("id").to_pylist(), dtype=object)
    for c, ex, coh in zip(cl["cluster"], cl["exemplars"], cl["cohesion"]):
        assert ex and set(ex) <= set(ids[labels == c])
        assert 0.0 < coh <= 1.0
    # Resolved parameters and seed travel with the map, under the libraries' own names.
    meta = m.meta
    assert meta["seed"] == 0 and meta["model"] == "timm:tf_efficientnet_lite0"
    assert {"n_neighbors", "min_dist", "n_epochs", "init"} <= set(meta["params"]["umap"])
    assert {"min_cluster_size", "min_samples", "cluster_selection_method"} <= set(meta["params"]["hdbscan"])
    assert "index_factory" in meta["params"]["faiss"] and meta["params"]["knn"]["method"] == "faiss:Flat"
    assert set(res.summary()["seconds"]) == {"knn", "umap", "cluster"}


def test_split_separates_two_merged_objects(objects_map):
    ws, _, m = objects_map
    obj = _object_of(ws)
    ids = np.array(m.points.column("id").to_pylist(), dtype=object)
    labels = m.points.column("cluster").to_numpy()
    # Two whole clusters thrown together must come apart again, each part (nearly) one object.
    sel = ids[(labels == 1) | (labels == 2)]
    parts = recluster(workspace=ws, map_name=m.name, ids=list(sel))
    assert len(parts) >= 2
    assert sum(p.size for p in parts) == len(sel)
    for p in parts[:2]:
        names = [obj[i] for i in p.ids]
        assert max(names.count(n) for n in set(names)) / len(names) >= 0.9
        assert set(p.exemplars) <= set(p.ids)
    with pytest.raises(ValueError, match="not on map"):
        recluster(workspace=ws, map_name=m.name, ids=["nope", *sel[:5]])
    three = recluster(workspace=ws, map_name=m.name, ids=list(sel[:3]))
    assert len(three) == 1 and three[0].size == 3


def test_update_places_new_poses_without_moving_anything(partial_workspace, tmp_path):
    from corral.pipeline.embed import EmbedConfig, embed

    before = read_map(partial_workspace)
    n0 = before.points.num_rows
    # A later embed run of new images into the same workspace (real files, real model).
    src = shared_data("coil20", "images")
    new_dir = tmp_path / "new"
    for name, poses in HELD_OUT.items():
        (new_dir / name).mkdir(parents=True)
        for k in poses:
            hit = [f for f in (src / name).iterdir() if f.stem.endswith(f"__{k}")]
            shutil.copy(hit[0], new_dir / name / hit[0].name)
    embed(str(new_dir), workspace=partial_workspace, config=EmbedConfig(progress=False, batch_size=8))

    res = update_map(workspace=partial_workspace)
    after = read_map(partial_workspace)
    assert res.new == 8 and after.points.num_rows == n0 + 8
    old_part = after.points.slice(0, n0)
    for col in before.points.column_names:
        assert old_part.column(col).equals(before.points.column(col)), f"column {col} changed"
    new_part = after.points.slice(n0)
    assert new_part.column("is_new").to_pylist() == [True] * 8
    obj = _object_of(partial_workspace)
    old_labels = before.points.column("cluster").to_numpy()
    old_ids = before.points.column("id").to_pylist()
    for i, c in zip(new_part.column("id").to_pylist(), new_part.column("cluster").to_pylist()):
        same = [lab for j, lab in zip(old_ids, old_labels) if obj[j] == obj[i]]
        home = max(set(same), key=same.count)
        assert c == home, f"new pose of {obj[i]} went to cluster {c}, its object lives in {home}"
    assert sum(after.clusters.column("size").to_pylist()) == int(np.sum(after.points.column("cluster").to_numpy() >= 0))
    assert after.meta["updates"][-1]["new"] == 8

    # Nothing new: nothing changes.
    again = update_map(workspace=partial_workspace)
    assert again.new == 0 and read_map(partial_workspace).points.equals(after.points)
    # A full rebuild stays available and takes the new items in as ordinary points.
    cfg = MapConfig(umap=UmapParams(n_epochs=100))
    rebuilt = build_map(workspace=partial_workspace, config=cfg)
    assert rebuilt.points == n0 + 8
    assert not read_map(partial_workspace).points.column("is_new").to_numpy(zero_copy_only=False).any()
