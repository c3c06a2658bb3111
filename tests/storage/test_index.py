"""The FAISS recognition index, the decision rule and its calibration, on clustered vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corral.storage.index import LabelIndex, RecognitionIndexError, IndexMeta, create_index, read_manifest, recommend_factory, train_index, tune_search
from corral.storage.index_build import IndexConfig, build_index, update_index
from corral.storage.labels import LabelStore
from corral.storage.recognizer import Recognizer, RuleConfig, apply_recall_target, choose_threshold, precision_threshold, split_for_calibration
from tests.storage.labelled_space import MODEL, WEIGHTS, clustered, write_set


def _flat(ids, vecs, labels, not_labels=None) -> LabelIndex:
    index = create_index("Flat", vecs.shape[1])
    index.add(vecs)
    return LabelIndex(index, IndexMeta(factory="Flat", dim=vecs.shape[1], model=MODEL, weights_hash=WEIGHTS), ids, labels, not_labels)


@pytest.fixture()
def space():
    """12 classes x 30 items; classes 0-9 are labelled (25 items each), 10-11 never are."""
    ids, vecs, names = clustered(12, 30, spread=0.25)
    return ids, vecs, names


def _labelled_ws(tmp_path, space, *, label_per_class: int = 25, classes: int = 10):
    ids, vecs, names = space
    ws = write_set(tmp_path / "ws", ids, vecs)
    store = LabelStore.open(ws)
    for c in range(classes):
        members = [i for i, n in zip(ids, names) if n == f"class-{c:02d}"][:label_per_class]
        store.assign(members, f"class-{c:02d}", user="ana")
    store.close()
    return ws


def test_explicit_arrays_search_and_round_trip(tmp_path, space):
    ids, vecs, names = space
    idx = _flat(ids, vecs, names, [() for _ in ids])
    sims, rows = idx.search(vecs[:5], 3)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]  # every vector finds itself first
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    idx.not_labels[7] = frozenset({idx.code("class-05")})
    idx.save(tmp_path / "index")
    back = LabelIndex.load(tmp_path / "index")
    assert back.ids == ids and back.ntotal == len(ids)
    assert [back.label_names[c] for c in back.row_label[:3]] == names[:3]
    assert {back.label_names[c] for c in back.not_labels[7]} == {"class-05"}
    assert back.meta.model == MODEL and back.meta.weights_hash == WEIGHTS and back.meta.generation == 1
    # a second save is a new generation; the old files are gone and the manifest names the new
    back.save(tmp_path / "index")
    m = read_manifest(tmp_path / "index")
    assert m["generation"] == 2 and sorted(p.name for p in (tmp_path / "index").iterdir()) == ["index-000002.faiss", "index.json", "rows-000002.parquet"]


def test_bad_factory_dimension_and_duplicates_are_clear_errors(space):
    ids, vecs, names = space
    with pytest.raises(RecognitionIndexError, match="factory='IVF,Nonsense'"):
        create_index("IVF,Nonsense", 32)
    idx = _flat(ids[:10], vecs[:10], names[:10])
    with pytest.raises(RecognitionIndexError, match="already in the index"):
        idx.add(ids[:1], vecs[:1], ["x"])
    with pytest.raises(RecognitionIndexError, match="dimension 32"):
        idx.add(["new"], np.ones((1, 8), np.float32), ["x"])
    with pytest.raises(RecognitionIndexError, match="dimension 32"):
        idx.search(np.ones((1, 16), np.float32), 3)
    rec = Recognizer(idx, RuleConfig(threshold=0.1))
    for bad, msg in ((np.full((1, 32), np.nan), "NaN"), (np.zeros((1, 32)), "zero vector"), (np.ones((1, 31)), "dimension 32")):
        with pytest.raises(ValueError, match=msg):
            rec.recognize(bad)
    with pytest.raises(RecognitionIndexError, match="another|this index holds"):
        rec.check_model("timm:resnet50", None)
    with pytest.raises(RecognitionIndexError, match="weights"):
        rec.check_model(MODEL, "sha256:" + "2" * 64)
    rec.check_model(MODEL, WEIGHTS)  # the index's own model passes


def test_recommended_factories():
    assert recommend_factory(1000, 768) == "Flat"
    assert recommend_factory(1_000_000, 768) == "IVF1024,PQ192x4fs,RFlat"
    assert recommend_factory(1_000_000, 768, gpu=True) == "IVF1024,Flat"
    assert recommend_factory(400_000, 130).endswith("SQ8")  # 130/4 is not whole: scalar quantiser instead
    with pytest.raises(ValueError, match="dim"):
        recommend_factory(10, 0)


def test_ivf_index_is_trained_on_a_sample_and_tuned_for_recall():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = create_index("IVF32,PQ8x4fs,RFlat", 32)
    train_index(index, x)
    index.add(x)
    tuning = tune_search(index, x, target_recall=0.95, queries=200)
    assert tuning["recall_at_1"] >= 0.95
    assert 1 <= tuning["params"]["nprobe"] <= 32 and tuning["params"]["k_factor_rf"] == 16


def test_vote_rule_uses_negatives_and_skips_inactive_rows(space):
    ids, vecs, names = space
    # rows 0-29 are class-00; row 0 was excluded from class-00 by a curator (now unlabelled)
    labels = list(names)
    labels[0] = None
    not_labels = [() for _ in ids]
    not_labels[0] = ("class-00",)
    rec = Recognizer(_flat(ids, vecs, labels, not_labels), RuleConfig(threshold=0.3))
    near_dup = vecs[0] + 0.01 * np.random.default_rng(3).standard_normal(32).astype(np.float32)
    d = rec.recognize(near_dup[None])[0]
    assert d.label is None, "a near-duplicate of an excluded item must not get the label it was excluded from"
    assert rec.recognize(vecs[5:6])[0].label == "class-00"  # the rest of the class is still recognised
    # an inactive row (lost its label, not excluded) is invisible to searches
    labels2 = list(names)
    labels2[0] = None
    rec2 = Recognizer(_flat(ids, vecs, labels2), RuleConfig(threshold=0.3))
    sims, rows = rec2.index.search(vecs[:1], 3)
    assert 0 not in rows[0].tolist()
    assert rec2.recognize(vecs[:1])[0].label == "class-00"


def test_calibration_split_and_threshold_choice():
    codes = np.repeat(np.arange(10), 20).astype(np.int32)
    codes = np.concatenate([codes, [-1, -1]])  # two negatives always stay in the reference set
    ref, known, unknown = split_for_calibration(codes, holdout=0.2, class_holdout=0.2, seed=0)
    assert len(np.unique(codes[unknown])) == 2 and not (ref & (known | unknown)).any()
    assert known.sum() == 8 * 4 and ref[-2:].all()
    ks = np.array([0.1, -0.02, 0.05, -0.3])  # margins of known queries (the last one named wrongly)
    ok = np.array([True, True, True, False])
    us = np.array([-0.4, -0.35, -0.1])  # margins of unknown queries
    t = choose_threshold(ks, ok, us)
    assert -0.1 < t < -0.02  # names all correct knowns and rejects every unknown
    assert -0.5 <= choose_threshold(ks, ok, us - 5) < -0.02  # a huge empty gap still gives a sane threshold
    assert precision_threshold(ks, ok, us, 1.0) == pytest.approx(t, abs=0.1)


def test_recall_target_lowers_the_threshold_but_keeps_a_rejection_floor():
    ks = np.linspace(-0.4, 0.1, 51)  # margins of 51 correctly named known queries
    ok = np.ones(51, bool)
    us = np.linspace(-0.6, -0.2, 41)  # unknown margins overlapping the known ones
    balanced = choose_threshold(ks, ok, us)
    assert apply_recall_target(balanced, ks, ok, us, None, 0.8) == balanced
    t = apply_recall_target(balanced, ks, ok, us, 0.97, 0.0)
    assert t < balanced and (ks >= t).mean() >= 0.97  # the target is reached
    floored = apply_recall_target(balanced, ks, ok, us, 0.97, 0.9)
    assert t < floored <= balanced and (us < floored).mean() >= 0.9  # but unknown rejection stays >= 0.9
    assert apply_recall_target(0.5, ks, ok, us, 0.5, 0.0) < 0.5
    assert apply_recall_target(-0.45, ks, ok, us, 0.5, 0.0) == -0.45  # never stricter than the balanced choice


def test_build_from_the_label_store_calibrates_and_recognises(tmp_path, space):
    ids, vecs, names = space
    ws = _labelled_ws(tmp_path, space)
    res = build_index(workspace=ws)
    assert res.mode == "full" and res.factory == "Flat" and res.rows == 250 and res.labels == 10
    cal = res.calibration
    assert cal["known_queries"] > 0 and cal["unknown_queries"] > 0 and cal["labels_held_out"] == 2
    assert cal["at_threshold"]["precision"] >= 0.9 and cal["at_threshold"]["recall"] >= 0.9
    rec = Recognizer(LabelIndex.load(ws.root))
    held = [j for j in range(len(ids)) if int(names[j][-2:]) < 10 and j % 30 >= 25]
    got = rec.recognize(vecs[held])
    assert np.mean([d.label == names[j] for d, j in zip(got, held)]) >= 0.95
    unseen = [j for j in range(len(ids)) if int(names[j][-2:]) >= 10]
    assert np.mean([d.label is None for d in rec.recognize(vecs[unseen])]) >= 0.9
    d = got[0]
    assert d.top[0][0] == d.label and d.top[0][1] == pytest.approx(d.score)


def test_incremental_update_adds_without_rebuild_and_full_rebuild_on_request(tmp_path, space):
    ids, vecs, names = space
    ws = _labelled_ws(tmp_path, space, label_per_class=20)
    build_index(workspace=ws, config=IndexConfig(factory="IVF4,Flat", search={"nprobe": 4}))
    before = LabelIndex.load(ws.index_dir)
    import faiss

    centroids = faiss.extract_index_ivf(before.index).quantizer.reconstruct_n(0, 4)
    new = [j for j in range(len(ids)) if int(names[j][-2:]) < 10 and 20 <= j % 30 < 25]
    store = LabelStore.open(ws)
    for c in range(10):
        store.assign([ids[j] for j in new if names[j] == f"class-{c:02d}"], f"class-{c:02d}", user="ben")
    store.rename_label("class-03", "mug", user="ben")
    store.close()
    res = update_index(workspace=ws)
    assert res.mode == "incremental" and res.added == len(new) and res.rows == 250
    after = LabelIndex.load(ws.index_dir)
    assert after.meta.generation == before.meta.generation + 1 and after.meta.factory == "IVF4,Flat"
    assert np.allclose(faiss.extract_index_ivf(after.index).quantizer.reconstruct_n(0, 4), centroids), "update must not retrain"
    rec = Recognizer(after)
    assert rec.recognize(vecs[[j for j in new if names[j] == "class-03"]])[0].label == "mug"  # renamed without re-adding
    assert update_index(workspace=ws).mode == "unchanged"
    # unlabelling most items makes the next update a full rebuild
    store = LabelStore.open(ws)
    store.unlabel([i for i, n in zip(ids, names) if n in ("class-00", "class-01", "class-02", "class-04")], user="ben")
    store.close()
    res = update_index(workspace=ws)
    assert res.mode == "full" and res.inactive == 0 and res.rows == 150
    assert build_index(workspace=ws).mode == "full"


def test_no_labels_and_damaged_index_are_clear_errors(tmp_path, space):
    ids, vecs, _ = space
    ws = write_set(tmp_path / "ws", ids, vecs)
    with pytest.raises(RecognitionIndexError, match="no labelled items"):
        build_index(workspace=ws)
    with pytest.raises(RecognitionIndexError, match="no recognition index"):
        LabelIndex.load(ws.root)
    ws2 = _labelled_ws(tmp_path / "two", space)
    build_index(workspace=ws2)
    m = json.loads((ws2.index_dir / "index.json").read_text())
    (ws2.index_dir / m["files"]["faiss"]).write_bytes(b"not a faiss index")
    with pytest.raises(RecognitionIndexError, match="not a readable FAISS index"):
        LabelIndex.load(ws2.root)
    with pytest.raises(ValueError, match="k=0"):
        build_index(workspace=ws2, config=IndexConfig(rule=RuleConfig(k=0)))
