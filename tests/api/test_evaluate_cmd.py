"""corral evaluate ranks a workspace's embedding sets on its labels: real embedders, real images."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.digits import digits_workspace


def test_evaluate_ranks_the_embedder_that_separates_the_digits_first(tmp_path):
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.storage.labels import LabelStore

    ws, truth = digits_workspace(tmp_path, per_class=20)  # pixels:16
    # A second, worse embedding of the same images: 2 x 2 pixels keep almost nothing of a digit.
    embed(str(tmp_path / "digits"), workspace=ws, config=EmbedConfig(model="pixels:2", progress=False))
    with LabelStore.open(ws) as store:
        for c in sorted(set(truth.values())):
            store.assign([i for i in truth if truth[i] == c], f"digit {c}", user="ana")
    r = subprocess.run([sys.executable, "-m", "corral", "evaluate", "--workspace", str(ws), "--fresh"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    names = [s["embeddings"] for s in res["sets"]]
    assert names == ["pixels_16", "pixels_2"] and res["best"] == "pixels_16"
    good, bad = res["sets"]
    assert good["knn_agreement"] > bad["knn_agreement"] + 0.2 and good["items_per_action"] > bad["items_per_action"]
    assert "kNN agree" in r.stderr and "pixels_16" in r.stderr


def test_evaluate_without_labels_says_what_it_needs(tmp_path):
    ws, _ = digits_workspace(tmp_path, per_class=5)
    r = subprocess.run([sys.executable, "-m", "corral", "evaluate", "--workspace", str(ws)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "at least 2 labels" in r.stderr and "Traceback" not in r.stderr
