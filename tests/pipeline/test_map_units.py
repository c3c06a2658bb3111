"""The map's parts on seeded data: kNN engines, the torch layout, HDBSCAN outputs, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from corral.pipeline.cluster import HdbscanParams, cluster_points, predict
from corral.pipeline.cutselect import coords_graph, modularity, silhouette_judge
from corral.pipeline.knn import FaissParams, knn_graph, knn_query, torch_knn
from corral.pipeline.mapping import MapConfig, build_map, update_map
from corral.pipeline.project import UmapParams
from corral.storage.maps import read_map
from corral.storage.workspace import WorkspaceError
from tests.conftest import REPO
from tests.pipeline.map_helpers import blobs, write_set

FAST = dict(n_epochs=60)


def _exact(x: np.ndarray, k: int) -> np.ndarray:
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


# -- kNN ------------------------------------------------------------------------------------


def test_exact_knn_matches_brute_force_and_excludes_self():
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    g = knn_graph(x, k=10, method="faiss")
    assert g.method == "faiss:Flat"
    np.testing.assert_array_equal(g.indices, _exact(x, 10))
    assert (g.indices != np.arange(300)[:, None]).all()
    assert np.all(np.diff(g.distances, axis=1) >= -1e-6)
    want = np.linalg.norm(x[:, None] - x[g.indices], axis=-1)
    np.testing.assert_allclose(g.distances, want, rtol=1e-4, atol=1e-4)


def test_torch_knn_on_cpu_agrees_with_faiss():
    x = np.random.default_rng(2).normal(size=(500, 32)).astype(np.float32)
    g = knn_graph(x, k=12, method="torch", device="cpu")
    assert g.method == "torch:cpu"
    np.testing.assert_array_equal(g.indices, knn_graph(x, k=12, method="faiss").indices)
    # Tiling must not change the answer.
    i1, d1 = torch_knn(x, x[:50], 5, device="cpu", tile_bytes=4 * 500 * 7)
    i2, _ = torch_knn(x, x[:50], 5, device="cpu")
    np.testing.assert_array_equal(i1, i2)


def test_duplicates_find_each_other_at_distance_zero():
    x = np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32)
    x[10] = x[20]
    g = knn_graph(x, k=3, method="faiss")
    assert g.indices[10, 0] == 20 and g.indices[20, 0] == 10
    assert g.distances[10, 0] == 0.0
    # Many copies of one vector: every row still gets k neighbours, none of them itself.
    many = np.repeat(x[:1], 8, axis=0)
    g2 = knn_graph(many, k=5, method="faiss")
    assert (g2.indices != np.arange(8)[:, None]).all() and (g2.distances == 0).all()


def test_hnsw_recall_and_ivf_fallback(caplog):
    x, _ = blobs(n_per=250, k=4, dim=32)
    exact = knn_graph(x, k=10, method="faiss").indices
    h = knn_graph(x, k=10, method="faiss", faiss_params=FaissParams(index_factory="HNSW32", efSearch=64))
    assert h.method == "faiss:HNSW32"
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, h.indices)])
    assert recall > 0.95
    ivf = knn_graph(x, k=10, method="faiss", faiss_params=FaissParams(index_factory="IVF1024,Flat"))
    assert ivf.method == "faiss:Flat" and "needs at least" in caplog.text


def test_knn_bad_input_says_what_and_how():
    x = np.random.default_rng(4).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="n_neighbors below 20"):
        knn_graph(x, k=20)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*row 3"):
        knn_graph(bad, k=3)
    with pytest.raises(ValueError, match="not a valid FAISS factory string"):
        knn_graph(x, k=3, method="faiss", faiss_params=FaissParams(index_factory="NoSuchIndex"))
    with pytest.raises(ValueError, match="dimension 5"):
        knn_query(x, np.zeros((2, 5), np.float32), k=3)
    with pytest.raises(ValueError, match="expected one of auto, faiss, torch"):
        knn_graph(x, k=3, method="annoy")


# -- clustering -------------------------------------------------------------------------------


def test_hdbscan_outputs_on_blobs_with_outliers():
    rng = np.random.default_rng(5)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    pts = np.concatenate([c + rng.normal(size=(n, 2)) for c, n in zip(centres, (120, 80, 60))] + [np.array([[30.0, 30.0], [-25.0, 12.0]])])
    res = cluster_points(pts, params=HdbscanParams(min_cluster_size=15, cluster_selection_method="eom"), assign_noise=False)
    assert res.n_clusters == 3
    assert [int(np.sum(res.labels == c)) for c in range(3)] == sorted((int(np.sum(res.labels == c)) for c in range(3)), reverse=True)
    assert (res.labels[-2:] == -1).all()
    assert res.outlier_scores.min() >= 0 and res.outlier_scores.max() <= 1
    assert res.outlier_scores[-2:].min() > np.quantile(res.outlier_scores[:-2], 0.95)
    assert (res.probabilities[res.labels < 0] == 0).all() and res.probabilities.max() == pytest.approx(1.0)
    # Handing noise to the nearest cluster keeps its probability at most 0.5.
    assigned = cluster_points(pts, params=HdbscanParams(min_cluster_size=15, cluster_selection_method="eom"), assign_noise=True)
    was_noise = res.labels < 0
    assert (assigned.labels >= 0).all()
    assert (assigned.probabilities[was_noise] <= 0.5).all()
    np.testing.assert_array_equal(assigned.labels[~was_noise], res.labels[~was_noise])


@pytest.mark.parametrize("dims", [2, 10])
def test_shared_linkage_cuts_equal_fast_hdbscans_own(dims):
    """Cuts share one sorted tree and linkage tree; each must equal fast_hdbscan's own cut."""
    from fast_hdbscan.hdbscan import clusters_from_spanning_tree, compute_minimum_spanning_tree

    from corral.pipeline.cluster import cut_linkage, linkage_of

    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 10, (12, dims))
    x = centres[rng.integers(0, 12, 3000)] + rng.normal(scale=0.5, size=(3000, dims))
    mst, _, _ = compute_minimum_spanning_tree(x, min_samples=5)
    linkage = linkage_of(mst)
    for mcs in (5, 60):
        for method in ("eom", "leaf"):
            for single, eps in ((False, 0.0), (True, 0.3)):
                want = clusters_from_spanning_tree(mst, min_cluster_size=mcs, cluster_selection_method=method, allow_single_cluster=single, cluster_selection_epsilon=eps)
                got = cut_linkage(linkage, 3000, min_cluster_size=mcs, method=method, allow_single_cluster=single, epsilon=eps)
                assert np.array_equal(np.asarray(want[0]), got[0]) and np.array_equal(np.asarray(want[1], np.float32), got[1])


def test_chosen_cut_beats_a_random_partition_on_modularity():
    x, truth = blobs(n_per=50, k=5, dim=2, spread=0.05)
    res = cluster_points(x * 10)
    assert res.resolved["chosen_by"] == "modularity" and len(res.candidates) > 2
    assert {"modularity", "min_cluster_size", "cluster_selection_method", "clusters"} <= set(res.candidates[0])
    g = coords_graph(x.astype(float), k=10)
    assert modularity(g, res.labels) > modularity(g, np.random.default_rng(0).permutation(truth)) + 0.3
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, res.labels) > 0.95


def test_silhouette_judge_prefers_the_true_partition():
    x, truth = blobs(n_per=40, k=6, dim=16)
    judge = silhouette_judge(x, sample=200)
    merged = np.where(truth < 3, 0, 1)
    shuffled = np.random.default_rng(0).permutation(truth)
    assert judge(truth) > judge(merged) > judge(shuffled)
    assert judge(np.zeros_like(truth)) == -1.0


def test_many_small_classes_keep_the_finest_cut(tmp_path):
    x, truth = blobs(n_per=8, k=60, dim=32, spread=0.35)
    write_set(tmp_path, x)
    cfg = MapConfig(umap=UmapParams(n_neighbors=15, n_epochs=100))
    build_map(workspace=tmp_path, config=cfg)
    m = read_map(tmp_path)
    from sklearn.metrics import adjusted_rand_score

    hd = m.meta["params"]["hdbscan"]
    assert hd["min_cluster_size"] == 5 and hd["chosen_by"].startswith("silhouette")
    assert adjusted_rand_score(truth, m.points.column("cluster").to_numpy()) > 0.8


def test_predict_puts_new_points_in_the_cluster_they_sit_in():
    rng = np.random.default_rng(6)
    ref = np.concatenate([rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + 12])
    res = cluster_points(ref, params=HdbscanParams(min_cluster_size=20, cluster_selection_method="eom"))
    new = np.array([[0.1, 0.0, 0.2], [12.2, 11.9, 12.0], [6.0, 6.0, 6.0]])
    pred = predict(new, ref_coords=ref, ref_labels=res.labels, state=res.state, assign_noise=False)
    assert pred.labels[0] == res.labels[0] and pred.labels[1] == res.labels[150]
    assert pred.labels[2] == -1 and pred.outlier_scores[2] > pred.outlier_scores[0]
    assert pred.probabilities[0] > 0.5
    both = predict(new, ref_coords=ref, ref_labels=res.labels, state=res.state, assign_noise=True)
    assert both.labels[2] >= 0 and both.probabilities[2] <= 0.5


def test_hdbscan_params_are_checked_up_front():
    with pytest.raises(ValueError, match="min_cluster_size=1"):
        HdbscanParams(min_cluster_size=1)
    with pytest.raises(ValueError, match="cluster_selection_method='best'"):
        HdbscanParams(cluster_selection_method="best")


# -- whole maps on small sets -----------------------------------------------------------------


def test_small_map_end_to_end_with_torch_layout(tmp_path):
    x, truth = blobs(n_per=60, k=4)
    write_set(tmp_path, x)
    cfg = MapConfig(layout="torch", device="cpu", umap=UmapParams(n_neighbors=15, n_epochs=150))
    res = build_map(workspace=tmp_path, config=cfg)
    m = read_map(tmp_path)
    assert m.meta["params"]["layout"]["used"] == "torch"
    assert res.points == 240 and res.clusters == 4
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, m.points.column("cluster").to_numpy()) > 0.95
    xy = np.stack([m.points.column("x").to_numpy(), m.points.column("y").to_numpy()], 1)
    assert np.isfinite(xy).all() and xy.std(0).min() > 0.5
    # Blobs stay apart on the 2-D map: each point's nearest 2-D neighbours share its blob.
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :10]
    assert np.mean(truth[nn] == truth[:, None]) > 0.95


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tiny_collections_give_a_sensible_map(tmp_path, n):
    x, _ = blobs(n_per=n, k=1)
    write_set(tmp_path, x)
    cfg = MapConfig(umap=UmapParams(n_epochs=30))
    res = build_map(workspace=tmp_path, config=cfg)
    m = read_map(tmp_path)
    assert res.points == n and m.points.num_rows == n
    assert np.isfinite(m.points.column("x").to_numpy()).all()
    assert (m.points.column("cluster").to_numpy() >= 0).all()
    assert m.clusters.num_rows >= 1


def test_nan_vectors_are_left_out_and_counted(tmp_path):
    x, _ = blobs(n_per=30, k=3)
    x[[4, 40]] = np.nan
    write_set(tmp_path, x)
    cfg = MapConfig(umap=UmapParams(n_epochs=30))
    res = build_map(workspace=tmp_path, config=cfg)
    assert res.points == 88 and res.skipped == {"non_finite": 2}
    assert res.summary()["skipped"] == {"non_finite": 2}
    ids = set(read_map(tmp_path).points.column("id").to_pylist())
    assert "item00004" not in ids and "item00040" not in ids


def test_bad_workspaces_fail_with_a_clear_message(tmp_path):
    with pytest.raises(WorkspaceError, match="does not exist"):
        build_map(workspace=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkspaceError, match="corral embed"):
        build_map(workspace=tmp_path / "empty")
    write_set(tmp_path / "nothing", np.empty((0, 8), np.float32))
    with pytest.raises(WorkspaceError, match="holds no vectors"):
        build_map(workspace=tmp_path / "nothing")
    write_set(tmp_path / "mixed", [np.ones((5, 8), np.float32), np.ones((5, 16), np.float32)])
    with pytest.raises(WorkspaceError, match="mixes dimensions 8 and 16"):
        build_map(workspace=tmp_path / "mixed")
    allnan = np.full((6, 4), np.nan, np.float32)
    write_set(tmp_path / "allnan", allnan)
    with pytest.raises(WorkspaceError, match="none of its 6 vectors is usable"):
        build_map(workspace=tmp_path / "allnan")
    x, _ = blobs(n_per=10, k=1)
    write_set(tmp_path / "nomap", x)
    with pytest.raises(WorkspaceError, match="without --update first"):
        update_map(workspace=tmp_path / "nomap")
    with pytest.raises(ValueError, match="n_neighbors=1"):
        build_map(workspace=tmp_path / "nomap", config=MapConfig(umap=UmapParams(n_neighbors=1)))


def test_cli_errors_are_one_line_and_help_is_light(tmp_path):
    env_code = (
        "import sys; from corral.api.cli import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('umap', 'numba', 'fast_hdbscan', 'faiss', 'torch') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", env_code, "map", "--workspace", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "corral embed" in r.stderr
    assert "HEAVY []" in r.stdout
    r = subprocess.run([sys.executable, "-c", env_code, "map", "--workspace", str(tmp_path), "--umap", "n_neigbors=5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "did you mean n_neighbors" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-c", env_code, "map", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--update" in r.stdout and "HEAVY" not in r.stdout


def test_cli_map_and_update_in_process(tmp_path, capsys):
    from corral.api.cli import main

    x, _ = blobs(n_per=40, k=3)
    write_set(tmp_path, x[:100], ids=[f"a{i:03d}" for i in range(120)])
    assert main(["map", "--workspace", str(tmp_path), "--umap", "n_epochs=40", "--hdbscan", "min_cluster_size=10", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"map", "points", "clusters", "noise_fraction", "seconds"}
    assert set(out["seconds"]) == {"knn", "umap", "cluster"} and out["points"] == 100
    meta = read_map(tmp_path).meta
    assert meta["seed"] == 3 and meta["params"]["umap"]["n_epochs"] == 40 and meta["params"]["hdbscan"]["min_cluster_size"] == 10
    write_set(tmp_path, [x[:100], x[100:]], ids=[f"a{i:03d}" for i in range(120)])
    assert main(["map", "--workspace", str(tmp_path), "--update"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["points"] == 120 and out["new"] == 20
