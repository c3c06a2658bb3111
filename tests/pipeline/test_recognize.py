"""Recognising real image files (generated objects) with a real pretrained embedder and the workspace's index."""

from __future__ import annotations

import json

import pytest

from corral.api.cli import main
from corral.pipeline.recognize import ImageEncoder, load_recognizer, recognize_paths
from corral.storage.index import RecognitionIndexError


@pytest.fixture(scope="module")
def recognizer(recognition_setup):
    return load_recognizer(recognition_setup.workspace)


@pytest.fixture(scope="module")
def encoder(recognizer):
    meta = recognizer.index.meta
    return ImageEncoder(model=meta.model, weights_hash=meta.weights_hash, device="cpu")


def test_known_objects_are_named_and_an_unlabelled_one_is_unknown(recognition_setup, recognizer, encoder):
    queries = [(p, label) for label, ps in recognition_setup.queries.items() for p in ps]
    results = recognize_paths([p for p, _ in queries], recognizer=recognizer, encoder=encoder)
    assert [r.input for r in results] == [str(p) for p, _ in queries]
    right = sum(r.label == label for r, (_, label) in zip(results, queries))
    assert right >= len(queries) - 1, [(r.input, r.label, r.score) for r in results]
    unknown = recognize_paths(recognition_setup.unknown, recognizer=recognizer, encoder=encoder)
    assert sum(r.label is None for r in unknown) >= len(unknown) - 1, [(r.label, r.score) for r in unknown]
    r = results[0]
    assert r.top and r.top[0][0] == r.label and r.top[0][1] == pytest.approx(r.score, abs=1e-5)


def test_bad_files_get_reasons_and_the_rest_are_answered(recognition_setup, recognizer, encoder, tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    good = recognition_setup.queries["obj004"][0]
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    files = [tmp_path / "notes.png", good, truncated, tmp_path / "empty.png", tmp_path / "missing.png"]
    res = {r.input: r for r in recognize_paths(files, recognizer=recognizer, encoder=encoder)}
    assert res[str(good)].label == "obj004" and res[str(good)].error is None
    assert res[str(tmp_path / "notes.png")].error.startswith("not_an_image")
    assert res[str(truncated)].error.split(":")[0] in ("truncated", "decode_error")
    assert res[str(tmp_path / "empty.png")].error == "empty: zero-byte file"
    assert res[str(tmp_path / "missing.png")].error.startswith("unreadable")


def test_other_weights_are_refused(recognizer):
    with pytest.raises(RecognitionIndexError, match="weights"):
        ImageEncoder(model=recognizer.index.meta.model, weights_hash="sha256:" + "0" * 64, device="cpu")


def test_cli_recognize_prints_one_json_line(recognition_setup, capsys, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    q = recognition_setup.queries["obj007"][0]
    code = main(["-q", "recognize", str(q), str(recognition_setup.unknown[0]), str(tmp_path / "bad.jpg"), "--workspace", str(recognition_setup.workspace), "--device", "cpu"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = out["results"]
    assert [r["input"] for r in rows] == [str(q), str(recognition_setup.unknown[0]), str(tmp_path / "bad.jpg")]
    assert rows[0]["label"] == "obj007" and isinstance(rows[0]["score"], float) and rows[0]["top"][0][0] == "obj007"
    assert rows[1]["label"] is None and rows[1]["score"] is not None
    assert rows[2]["label"] is None and rows[2]["score"] is None and "error" in rows[2]


def test_cli_index_build_info_and_errors(recognition_setup, capsys, tmp_path):
    ws = str(recognition_setup.workspace)
    assert main(["-q", "index", "info", "--workspace", ws]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["factory"] == "Flat" and info["labelled"] == sum(map(len, recognition_setup.labelled.values())) == 48 and info["labels"] == 4
    assert info["calibration"]["known_queries"] > 0 and "threshold" in info["rule"]
    assert main(["-q", "index", "build", "--workspace", ws, "--factory", "NotAFactory"]) == 2
    assert "NotAFactory" in capsys.readouterr().err
    assert main(["-q", "recognize", "x.png", "--workspace", str(tmp_path)]) == 2
    assert "no recognition index" in capsys.readouterr().err
