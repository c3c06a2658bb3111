"""What a user sees when a command is pointed at the wrong thing: one clear line, a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corral.api.cli import main


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_embed_of_an_empty_folder_says_nothing_was_embedded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.jpg").write_bytes(b"")  # hidden files are not part of a source
    code = main(["-q", "embed", str(tmp_path / "empty"), "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code != 0
    assert "corral embed: error:" in err and "nothing was embedded" in err and "Traceback" not in err
    assert not (tmp_path / "ws" / "embeddings").exists()  # no empty embedding set left behind


def test_embed_of_a_folder_without_images_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "notes"
    src.mkdir()
    (src / "readme.txt").write_text("not a picture\n")
    (src / "photo.jpg").write_bytes(b"")  # empty, despite its name
    code = main(["-q", "embed", str(src), "--workspace", str(tmp_path / "ws"), "--workers", "0", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 1
    assert "nothing was embedded: none of the 2 files" in out.err and "skipped.csv" in out.err
    summary = _last_json(out.out)
    assert summary["embedded"] == 0 and summary["skipped"] == 2


def test_recognize_with_a_missing_workspace_names_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    missing = tmp_path / "MISSING"
    code = main(["recognize", str(img), "--workspace", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--workspace {missing}: no such folder" in err and "--from " + str(missing) not in err


def test_models_lists_the_face_model_when_it_runs_offline(capsys: pytest.CaptureFixture[str]) -> None:
    from corral.pipeline import faces

    if not faces.available_offline():
        pytest.skip("dlib or the face-recognition-models package is not installed here")
    assert main(["models"]) == 0
    out = capsys.readouterr()
    assert "dlib:face-resnet" in _last_json(out.out)["offline"]
    assert "dlib:face-resnet" in out.err.split("usable offline", 1)[1].splitlines()[0]


def test_serve_refuses_a_folder_that_is_not_a_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "a.png")
    code = main(["serve", "--workspace", str(photos), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "not a Corral workspace" in err and "corral embed" in err
    assert not (photos / "users.json").exists()  # refused before anything was written
