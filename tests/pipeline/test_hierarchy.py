"""The cluster hierarchy kept with a map: generated blobs whose nesting is known.

Two groups far apart, each of two close blobs: HDBSCAN's leaf cut gives the four blobs, and the
condensed tree knows which two belong together, so stepping up from one blob gives the pair."""

from __future__ import annotations

import numpy as np
import pytest

from corral.pipeline.cluster import HdbscanParams, cluster_points
from corral.pipeline.hierarchy import children, node_members
from corral.storage.maps import HIERARCHY, clusters_table, points_table, read_hierarchy, write_map

CENTRES = [(0.0, 0.0), (3.0, 0.0), (30.0, 0.0), (33.0, 0.0)]  # blobs 0+1 and 2+3 are pairs


def nested_blobs(per_blob: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(4), per_blob)
    xy = np.asarray(CENTRES)[truth] + rng.normal(0, 0.45, (truth.size, 2))
    return xy.astype(np.float32), truth


@pytest.fixture(scope="module")
def clustered():
    xy, truth = nested_blobs()
    clu = cluster_points(xy, params=HdbscanParams(min_cluster_size=40, min_samples=10, cluster_selection_method="leaf"), assign_noise=True)
    return xy, truth, clu


def blob_of(clu, truth, c: int) -> int:
    """The generated blob most of cluster ``c`` comes from."""
    return int(np.bincount(truth[clu.labels == c], minlength=4).argmax())


def test_flat_clusters_are_the_blobs(clustered):
    _, truth, clu = clustered
    assert clu.n_clusters == 4
    assert sorted(blob_of(clu, truth, c) for c in range(4)) == [0, 1, 2, 3]


def test_a_cluster_node_holds_exactly_its_cluster(clustered):
    _, _, clu = clustered
    h = clu.hierarchy
    for c in range(clu.n_clusters):
        node = int(h["cluster_node"][c])
        assert h["node_cluster"][node] == c
        assert np.array_equal(node_members(h, node, clu.labels), np.flatnonzero(clu.labels == c))


def test_stepping_up_from_a_blob_gives_its_pair(clustered):
    _, truth, clu = clustered
    h = clu.hierarchy
    for c in range(clu.n_clusters):
        blob = blob_of(clu, truth, c)
        pair = {blob, blob ^ 1}  # 0<->1, 2<->3
        parent = int(h["node_parent"][h["cluster_node"][c]])
        assert parent > 0  # not the root: the pair has a node of its own
        rows = node_members(h, parent, clu.labels)
        got = np.bincount(truth[rows], minlength=4)
        expected = np.isin(truth, sorted(pair))
        assert got[sorted(pair)].sum() >= 0.97 * expected.sum()
        assert got[[b for b in range(4) if b not in pair]].sum() == 0
        # its children: this cluster and its sibling, the pair's other blob
        kids = children(h, parent)
        assert len(kids) == 2 and h["cluster_node"][c] in kids
        sibling = int(next(k for k in kids if k != h["cluster_node"][c]))
        sc = int(h["node_cluster"][sibling])
        assert sc >= 0 and blob_of(clu, truth, sc) == blob ^ 1
        # the two pairs split off the root
        assert h["node_parent"][parent] == 0


def test_nodes_are_bounded_by_min_cluster_size(clustered):
    xy, _, clu = clustered
    h = clu.hierarchy
    assert h["point_node"].shape == (xy.shape[0],)
    assert (h["node_size"][1:] >= 40).all()
    assert h["node_parent"].size <= xy.shape[0] // 40 * 2


def test_hierarchy_travels_with_the_map_files(clustered, tmp_path):
    xy, _, clu = clustered
    n = xy.shape[0]
    ids = [f"{i:032x}" for i in range(n)]
    k = clu.n_clusters
    args = dict(
        points=points_table(ids=ids, xy=xy, cluster=clu.labels, probability=clu.probabilities, outlier_score=clu.outlier_scores, is_new=np.zeros(n, bool)),
        clusters=clusters_table(cluster=np.arange(k), size=np.bincount(clu.labels, minlength=k), exemplars=[[] for _ in range(k)], cohesion=np.ones(k)),
        meta={"name": "m"},
    )
    write_map(tmp_path, **args, hierarchy=clu.hierarchy)
    back = read_hierarchy(tmp_path)
    assert set(back) == set(clu.hierarchy) and all(np.array_equal(back[a], clu.hierarchy[a]) for a in back)
    write_map(tmp_path, **args)  # placing items (None): the tree stays
    assert (tmp_path / HIERARCHY).is_file()
    write_map(tmp_path, **args, hierarchy={})  # a rebuild without a tree: no stale one left
    assert read_hierarchy(tmp_path) == {}


def test_few_items_have_no_hierarchy():
    assert cluster_points(np.zeros((3, 2))).hierarchy == {}


def test_corral_map_keeps_the_hierarchy(generated_map):
    """``build_map`` writes the tree beside the map; every flat cluster has a node."""
    from corral.storage.maps import read_map

    m = read_map(generated_map)
    h = read_hierarchy(m.path)
    labels = m.points.column("cluster").to_numpy()
    assert h["point_node"].size == m.points.num_rows
    assert h["cluster_node"].size == int(labels.max()) + 1 and (h["cluster_node"] >= 0).all()
    for c in range(int(labels.max()) + 1):
        assert np.array_equal(node_members(h, int(h["cluster_node"][c]), labels), np.flatnonzero(labels == c))


def test_stepping_down_from_an_under_split_cluster_gives_its_halves():
    """With the excess-of-mass cut two close blobs are one cluster; the tree still holds the two
    halves below it, each nearly one blob and inside the cluster."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 150)
    xy = np.array([(0.0, 0.0), (2.0, 0.0), (30.0, 0.0), (33.0, 0.0)])[truth] + rng.normal(0, 0.45, (600, 2))
    clu = cluster_points(xy.astype(np.float32), params=HdbscanParams(min_cluster_size=40, min_samples=10, cluster_selection_method="eom"))
    h = clu.hierarchy
    merged = int(np.bincount(clu.labels[truth == 0]).argmax())
    own = np.flatnonzero(clu.labels == merged)
    assert set(truth[own].tolist()) == {0, 1}
    halves = children(h, int(h["cluster_node"][merged]))
    assert len(halves) == 2 and (h["node_cluster"][halves] == -1).all()
    got = set()
    for v in halves.tolist():
        rows = node_members(h, v, clu.labels)
        assert np.isin(rows, own).all()
        counts = np.bincount(truth[rows], minlength=4)
        assert counts.max() >= 0.98 * rows.size and rows.size >= 0.8 * 150
        got.add(int(counts.argmax()))
    assert got == {0, 1}
