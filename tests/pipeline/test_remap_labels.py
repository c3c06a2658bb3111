"""Re-map with labels: a new map laid out with the labels as a partial target; the old map stays."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.digits import digits_workspace


def test_map_with_labels_separates_the_named_and_keeps_the_old_map(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from corral.storage.labels import LabelStore
    from corral.storage.maps import list_maps, read_map

    ws, truth = digits_workspace(tmp_path, per_class=30)
    rng = np.random.default_rng(0)
    named = [i for i in sorted(truth) if rng.random() < 0.3]
    with LabelStore.open(ws) as store:
        for c in sorted(set(truth.values())):
            store.assign([i for i in named if truth[i] == c], f"digit {c}", user="ana")
        version = store.version()
    before = read_map(ws)
    out = subprocess.run([sys.executable, "-m", "corral", "map", "--workspace", str(ws), "--with-labels"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    new_name = f"{before.meta['embeddings']}-labels-v{version}"
    assert res["map"] == new_name and set(list_maps(ws)) == {before.name, new_name}
    after = read_map(ws, new_name)
    assert after.meta["target"] == {"labelled": len(named), "labels": 10, "target_weight": 0.5}

    def named_ari(m):
        ids = m.points.column("id").to_pylist()
        cl = m.points.column("cluster").to_numpy()
        rows = [k for k, i in enumerate(ids) if i in set(named)]
        return adjusted_rand_score([truth[ids[k]] for k in rows], cl[rows])

    assert named_ari(after) > named_ari(before)  # the named items now fall into their own clusters
    assert read_map(ws, before.name).points.equals(before.points)  # the old map is untouched


def test_map_with_labels_needs_labels(tmp_path):
    ws, _ = digits_workspace(tmp_path, per_class=10)
    out = subprocess.run([sys.executable, "-m", "corral", "map", "--workspace", str(ws), "--with-labels"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "at least 2 labels" in out.stderr
    out = subprocess.run([sys.executable, "-m", "corral", "map", "--workspace", str(ws), "--with-labels", "--update"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "use one of them" in out.stderr
