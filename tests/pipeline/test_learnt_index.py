"""The recognition index with the curation loop's model as its head, on clustered vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corral.pipeline.learn import LearnConfig, learn
from corral.pipeline.learnt_index import build, head_fitter, head_from_result, update
from corral.storage.index import LabelIndex, RecognitionIndexError
from corral.storage.index_build import build_index
from corral.storage.labels import LabelStore
from corral.storage.recognizer import Recognizer
from tests.storage.labelled_space import clustered, write_set

#: PCA to 16 of the 32 dimensions, so the stored head carries a real projection
CFG = LearnConfig(dims=16)


@pytest.fixture()
def space():
    """12 classes x 30 items; classes 0-9 are labelled (25 items each), 10-11 never are."""
    return clustered(12, 30, spread=0.25)


def _labelled_ws(tmp_path, space):
    ids, vecs, names = space
    ws = write_set(tmp_path / "ws", ids, vecs)
    store = LabelStore.open(ws)
    for c in range(10):
        store.assign([i for i, n in zip(ids, names) if n == f"class-{c:02d}"][:25], f"class-{c:02d}", user="ana")
    store.close()
    return ws


def test_the_head_scores_new_vectors_as_the_loop_scored_them(space):
    ids, vecs, names = space
    labels = [n if int(n[-2:]) < 10 and j % 30 < 25 else None for j, n in enumerate(names)]
    res = learn(vectors=vecs, labels=labels, config=LearnConfig(dims=16, model="logreg"))
    head = head_from_result(res, vecs)
    assert head.pca_components is not None and head.pca_components.shape == (16, 32)
    free = np.flatnonzero(~res.labelled)
    got = head.answer(vecs[free])
    assert (np.array(head.classes)[got.predicted] == np.array(res.classes)[res.predicted[free]]).all()
    # the loop's own rows come from the randomized SVD's factors, a new vector from the projection:
    # the confidences agree to a few hundredths (mostly a step of the novelty share), not exactly
    diff = np.abs(got.confidence - res.confidence[free])
    assert np.median(diff) <= 0.005 and diff.max() <= 0.06
    assert head.threshold == pytest.approx(res.bar)


def test_build_stores_the_head_and_it_answers_as_in_memory(tmp_path, space):
    ids, vecs, names = space
    ws = _labelled_ws(tmp_path, space)
    fitted = []

    def keep(vectors, labels):
        fitted.append(head_fitter(CFG)(vectors, labels))
        return fitted[-1]

    res = build_index(workspace=ws, head=keep)
    assert res.using == "learnt" and res.head["labels"] == 10 and 0.97 <= res.head["threshold"] < 1
    manifest = json.loads((ws.index_dir / "index.json").read_text())
    head_file = ws.index_dir / manifest["files"]["head"]
    with np.load(head_file, allow_pickle=False) as arrays:  # readable with numpy alone
        assert arrays["coef"].shape == (10, 16) and arrays["labelled"].shape == (250, 16)
    assert manifest["head"]["classes"] == [f"class-{c:02d}" for c in range(10)]
    loaded = LabelIndex.load(ws.root)
    # the head read back gives the answers of the head that was fitted in memory
    a, b = loaded.head.answer(vecs), fitted[0].answer(vecs)
    assert (a.predicted == b.predicted).all() and np.array_equal(a.confidence, b.confidence) and np.array_equal(a.proba, b.proba)
    assert loaded.head.classes == fitted[0].classes and loaded.head.threshold == fitted[0].threshold
    rec = Recognizer(loaded)
    assert rec.using == "learnt"
    held = [j for j in range(len(ids)) if int(names[j][-2:]) < 10 and j % 30 >= 25]
    got = rec.recognize(vecs[held])
    assert np.mean([d.label == names[j] for d, j in zip(got, held)]) >= 0.9
    assert all(d.confidence is not None and d.label in (None, d.learnt) for d in got)
    strangers = [j for j in range(len(ids)) if int(names[j][-2:]) >= 10]
    answers = rec.recognize(vecs[strangers])
    alone = Recognizer(loaded, using="index").recognize(vecs[strangers])
    assert np.mean([d.label is None for d in answers]) >= 0.9
    # a name needs both: every stranger the index alone turns down stays unknown
    assert all(d.label is None for d, i in zip(answers, alone) if i.label is None)
    assert all(d.learnt is not None for d in answers)  # the model always has a best guess; its threshold turns it down


def test_an_index_without_a_head_loads_and_answers_as_before(tmp_path, space):
    ids, vecs, names = space
    ws = _labelled_ws(tmp_path, space)
    build_index(workspace=ws)
    manifest = json.loads((ws.index_dir / "index.json").read_text())
    manifest.pop("head", None)  # as an index written before heads existed
    (ws.index_dir / "index.json").write_text(json.dumps(manifest))
    idx = LabelIndex.load(ws.root)
    assert idx.head is None and not list(ws.index_dir.glob("head-*"))
    rec = Recognizer(idx)
    assert rec.using == "index"
    d = rec.recognize(vecs[:1])[0]
    assert d.confidence is None and d.as_dict()["using"] == "index" and d.label == names[0]
    with pytest.raises(RecognitionIndexError, match="no learnt head"):
        Recognizer(idx, using="learnt")
    # --using index on a headed index: the same index's own answers
    build(workspace=ws, using="learnt", learn_config=CFG)
    both = LabelIndex.load(ws.root)
    plain = Recognizer(both, using="index").recognize(vecs)
    assert [d.label for d in plain] == [d.label for d in rec.recognize(vecs)]


def test_update_refits_the_head_on_renamed_labels_and_using_index_drops_it(tmp_path, space):
    ids, vecs, names = space
    ws = _labelled_ws(tmp_path, space)
    build(workspace=ws, using="learnt", learn_config=CFG)
    store = LabelStore.open(ws)
    store.rename_label("class-03", "mug", user="ben")
    store.close()
    res = update(workspace=ws, learn_config=CFG)
    assert res.mode == "incremental" and res.using == "learnt"
    idx = LabelIndex.load(ws.root)
    assert "mug" in idx.head.classes and "class-03" not in idx.head.classes
    mugs = [j for j in range(len(ids)) if names[j] == "class-03" and j % 30 >= 25]
    assert [d.label for d in Recognizer(idx).recognize(vecs[mugs])].count("mug") >= len(mugs) - 1
    res = update(workspace=ws, using="index")
    assert res.using == "index" and LabelIndex.load(ws.root).head is None and not list(ws.index_dir.glob("head-*"))


def test_too_few_labels_build_the_index_alone(tmp_path, space):
    ids, vecs, names = space
    ws = write_set(tmp_path / "ws", ids, vecs)
    store = LabelStore.open(ws)
    store.assign(ids[:5], "class-00", user="ana")
    store.close()
    res = build(workspace=ws, using="learnt")
    assert res.using == "index" and LabelIndex.load(ws.root).head is None
    with pytest.raises(ValueError, match="using='both'"):
        build(workspace=ws, using="both")
