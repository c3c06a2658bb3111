"""Pre-labelling a new collection with the model the curation loop learns (``corral suggest``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corral.api.cli import main
from corral.pipeline.learn import LearnError
from corral.pipeline.presuggest import suggest_any, suggest_learnt
from corral.storage.index_build import build_index
from corral.storage.labels import LabelStore
from corral.storage.suggestions import pending_suggestions, read_suggestions
from tests.storage.labelled_space import clustered, one_cluster_map, write_set


def _workspace(tmp_path, *, labelled_classes: int = 8, per_label: int = 20):
    """10 classes x 30 items; ``labelled_classes`` of them have ``per_label`` items named, and the
    rest of every class (two classes nobody named among them) is a new collection on the map."""
    ids, vecs, names = clustered(10, 30, spread=0.25, seed=7)
    ws = write_set(tmp_path / "ws", ids, vecs)
    store = LabelStore.open(ws)
    for c in range(labelled_classes):
        store.assign([i for j, (i, n) in enumerate(zip(ids, names)) if n == f"class-{c:02d}" and j % 30 < per_label], f"class-{c:02d}", user="ana")
    store.close()
    is_new = np.array([(j % 30 >= per_label) or int(n[-2:]) >= labelled_classes for j, n in enumerate(names)])
    one_cluster_map(ws, ids, is_new)
    return ws, dict(zip(ids, names))


def test_the_learnt_model_names_new_items_of_known_labels_and_leaves_strangers(tmp_path):
    ws, truth = _workspace(tmp_path)
    res = suggest_learnt(workspace=ws, map_name="toy")
    assert res.using == "learnt model" and res.candidates == 8 * 10 + 2 * 30
    sug = read_suggestions(ws, "toy")
    got = dict(zip(sug.table.column("id").to_pylist(), sug.table.column("label").to_pylist()))
    assert len(got) >= 0.6 * 80, "most new items of named classes should get a suggestion"
    assert sum(truth[i] == lb for i, lb in got.items()) / len(got) >= 0.97
    strangers = [i for i, n in truth.items() if int(n[-2:]) >= 8]
    assert sum(i in got for i in strangers) <= 3, "items of classes nobody named are left for curators"
    scores = sug.table.column("score").to_numpy()
    assert (scores >= res.threshold).all() and sug.meta["using"] == "learnt model" and sug.meta["model"] in ("logreg", "spreading")
    top = json.loads(sug.table.column("top")[0].as_py())
    assert top[0][0] == got[sug.table.column("id")[0].as_py()] and 0 < top[0][1] <= 1
    # the same labels through the recognition index's pre-labelling threshold name fewer
    build_index(workspace=ws)
    by_index = suggest_any(workspace=ws, map_name="toy", using="index")[0]
    assert by_index.using == "index" and by_index.suggested < res.suggested


def test_an_excluded_label_is_never_suggested_and_accepting_drops_the_suggestion(tmp_path):
    ws, truth = _workspace(tmp_path)
    first = suggest_learnt(workspace=ws, map_name="toy")
    label, ids, _ = next(read_suggestions(ws, "toy").groups())
    store = LabelStore.open(ws)
    store.exclude(ids[:2], label, user="ben")  # "these are not <label>"
    store.close()
    suggest_learnt(workspace=ws, map_name="toy")
    again = dict(zip(*(read_suggestions(ws, "toy").table.column(c).to_pylist() for c in ("id", "label"))))
    assert all(again.get(i) != label for i in ids[:2]) and first.suggested >= 2
    store = LabelStore.open(ws)
    store.assign(ids[2:4], label, user="ben")
    pending = pending_suggestions(ws, "toy", store=store)
    store.close()
    assert not set(ids[2:4]) & set(pending.table.column("id").to_pylist())


def test_too_few_labels_say_what_is_needed_or_fall_back_to_the_index(tmp_path):
    ws, _ = _workspace(tmp_path, labelled_classes=1)
    with pytest.raises(LearnError, match="at least 2 labels"):
        suggest_any(workspace=ws, map_name="toy")
    build_index(workspace=ws)
    res, note = suggest_any(workspace=ws, map_name="toy")
    assert res.using == "index" and "recognition index instead" in note
    with pytest.raises(ValueError, match="learnt or index"):
        suggest_any(workspace=ws, map_name="toy", using="magic")
    # Three labels teach a model, but too few to tell a label nobody named from a named one (the
    # Learn panel suggests nothing then either): it says so, and the index answers where there is one.
    ws3, _ = _workspace(tmp_path / "three", labelled_classes=3)
    with pytest.raises(LearnError, match="once 4 labels have 3 or more items each; it has 3"):
        suggest_any(workspace=ws3, map_name="toy")
    assert suggest_learnt(workspace=ws3, map_name="toy", gate=False).suggested > 0  # the model alone would answer
    build_index(workspace=ws3)
    res, note = suggest_any(workspace=ws3, map_name="toy")
    assert res.using == "index" and "once 4 labels" in note and "recognition index instead" in note
    with pytest.raises(ValueError, match="confidence in"):
        suggest_learnt(workspace=ws, map_name="toy", min_confidence=1.5)


def test_the_command_uses_the_learnt_model_and_refuses_mixed_thresholds(tmp_path, capsys):
    ws, _ = _workspace(tmp_path)
    assert main(["suggest", "--workspace", str(ws.root), "--map", "toy"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["using"] == "learnt model" and summary["suggested"] > 0 and "from the learnt model (confidence >=" in out.err
    assert main(["suggest", "--workspace", str(ws.root), "--map", "toy", "--min-margin", "0.1"]) == 2
    assert "--using index" in capsys.readouterr().err
    build_index(workspace=ws)
    assert main(["suggest", "--workspace", str(ws.root), "--map", "toy", "--using", "index"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["using"] == "index"


def _look_alike_workspace(tmp_path, *, sep: float = 0.7, seed: int = 1):
    """10 classes x 30 items; class 9 lies beside class 0 (its centre ``sep`` away), nobody named it;
    classes 0-8 have 20 items named, and the rest of every class is the new collection."""
    from tests.storage.labelled_space import item_id

    rng = np.random.default_rng(seed)
    dim = 32
    centres = rng.standard_normal((10, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    side = rng.standard_normal(dim)
    side -= (side @ centres[0]) * centres[0]
    centres[9] = centres[0] + sep * side / np.linalg.norm(side)
    centres[9] /= np.linalg.norm(centres[9])
    ids = [item_id(c, i, "") for c in range(10) for i in range(30)]
    names = [f"class-{c:02d}" for c in range(10) for _ in range(30)]
    x = np.concatenate([centres[c] + rng.standard_normal((30, dim)) / np.sqrt(dim) for c in range(10)])
    ws = write_set(tmp_path / "ws", ids, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    with LabelStore.open(ws) as store:
        for c in range(9):
            store.assign([i for j, (i, n) in enumerate(zip(ids, names)) if n == f"class-{c:02d}" and j % 30 < 20], f"class-{c:02d}", user="ana")
    one_cluster_map(ws, ids, np.array([(j % 30 >= 20) or n == "class-09" for j, n in enumerate(names)]))
    return ws, dict(zip(ids, names))


def test_the_known_new_gate_keeps_most_of_an_unnamed_look_alike_unnamed(tmp_path):
    """A class nobody named beside a named one: the model alone gives many of its items the named
    one's label; the loop's known/new gate (its items form a group with no labelled item) holds
    most of them back, and what is suggested is more often right."""
    ws, truth = _look_alike_workspace(tmp_path)
    got = {}
    for gate in (False, True):
        res = suggest_learnt(workspace=ws, map_name="toy", gate=gate)
        sug = read_suggestions(ws, "toy")
        got[gate] = dict(zip(sug.table.column("id").to_pylist(), sug.table.column("label").to_pylist()))
        assert (sug.meta.get("held_back_as_new") is not None) == gate
    strangers = {g: sum(truth[i] == "class-09" for i in got[g]) for g in got}
    precision = {g: sum(truth[i] == lb for i, lb in got[g].items()) / len(got[g]) for g in got}
    assert strangers[False] >= 10 and strangers[True] <= 0.5 * strangers[False]
    assert precision[True] > precision[False] and len(got[True]) >= 0.6 * 90
    assert res.suggested == len(got[True])


def test_corral_learn_writes_the_round_with_its_likely_pages_and_says_so(tmp_path, capsys):
    """``corral learn`` on the same workspace: the round file holds the suggested groups and a review
    page per label; the command's summary says how many, quiet or not."""
    ws, _ = _workspace(tmp_path, per_label=6)
    assert main(["learn", "--workspace", str(ws.root), "--map", "toy"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    rnd = json.loads((ws.root / "learn" / "toy.json").read_text())
    assert summary["likely_pages"] == len(rnd["likely"]) > 0 and "review pages of the likeliest items" in out.err
    assert all(3 <= len(p["indices"]) <= 48 and p["ids"] for p in rnd["likely"])
    assert main(["--quiet", "learn", "--workspace", str(ws.root), "--map", "toy"]) == 0
    quiet = capsys.readouterr()
    assert json.loads(quiet.out.strip().splitlines()[-1])["likely_pages"] == summary["likely_pages"] and "review pages" not in quiet.err
