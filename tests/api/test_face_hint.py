"""corral embed says when a collection looks like faces and a face pipeline would serve it better."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import shared_data
from tests.digits import digits_folder


def _embed(src, ws):
    return subprocess.run([sys.executable, "-m", "corral", "embed", str(src), "--workspace", str(ws)], capture_output=True, text=True, timeout=600)


def test_face_collection_gets_the_face_pipeline_hint(tmp_path):
    orl = shared_data("orl_faces", "images")
    src = tmp_path / "faces"
    for person in sorted(orl.iterdir())[:4]:
        shutil.copytree(person, src / person.name)
    r = _embed(src, tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    assert "hint: most of these images look like faces" in r.stderr and "dlib:face-resnet" in r.stderr


def test_no_hint_for_things_that_are_not_faces(tmp_path):
    digits_folder(tmp_path / "digits", per_class=3)
    r = _embed(tmp_path / "digits", tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    assert "look like faces" not in r.stderr
