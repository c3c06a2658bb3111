"""Viewers (and recognition services) never see absolute server paths: not in the recognition
status, not in a job's source, error, log or result. Curators and admins, who start jobs on the
server's folders, still do (issue 13, item 4)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from corral.api.redact import hide_paths


def _wait(client, auth, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=auth).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running")


@pytest.fixture
def jobs_client(curation_ws, tmp_path, monkeypatch):
    """The app with an allowed source folder, and job commands that fail naming server paths."""
    from corral.api import jobs as jobs_module
    from corral.api.app import create_app
    from corral.api.settings import Settings

    # the stand-in command fails as a real one does: it names the folder and the workspace
    fail = "import sys; a = sys.argv; print(f'reading {a[2]} 1/4 [', file=sys.stderr); sys.exit(f'error: no images under {a[2]} (workspace {a[4]}/cache)')"
    monkeypatch.setattr(jobs_module, "CLI_BOOT", fail)
    src = tmp_path / "secret-share" / "photos"
    src.mkdir(parents=True)
    with TestClient(create_app(Settings(workspace=curation_ws.root, source_roots=[tmp_path]))) as c:
        yield c, src


def test_a_viewer_sees_no_server_path_in_jobs_a_curator_does(jobs_client, curation_ws):
    client, src = jobs_client
    curator, viewer = curation_ws.auth("curator"), curation_ws.auth("viewer")
    job = client.post("/api/jobs", headers=curator, json={"kind": "embed", "source": str(src)}).json()
    done = _wait(client, curator, job["id"])
    assert done["status"] == "failed" and str(src) in done["error"] and str(src) in done["log_tail"]  # the curator's answer keeps them
    for answer in (client.get(f"/api/jobs/{job['id']}", headers=viewer).json(), client.get("/api/jobs", headers=viewer).json()["jobs"][0]):
        text = json.dumps(answer, ensure_ascii=False)
        assert str(src) not in text and str(curation_ws.root) not in text and str(src.parent) not in text, text
        assert answer["status"] == "failed" and "no images under …/photos" in answer["error"]  # still says what went wrong
        assert answer["source"] == "…/photos"


def test_a_viewer_sees_no_server_path_in_the_recognition_status(client, curation_ws):
    """The workspace has no index yet, so the status names its source and why nothing is loaded."""
    full = client.get("/api/recognize/status", headers=curation_ws.auth("curator")).json()
    assert str(curation_ws.root) in json.dumps(full)  # the curator sees where the index is looked for
    for role in ("viewer", "service"):
        r = client.get("/api/recognize/status", headers=curation_ws.auth(role))
        assert r.status_code == 200
        text = json.dumps(r.json(), ensure_ascii=False)
        assert str(curation_ws.root) not in text and str(curation_ws.root.parent) not in text, text
        assert r.json()["source"] == "…/" + curation_ws.root.name


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ("/srv/photos/cat.jpg is not readable", "…/cat.jpg is not readable"),
        ("cannot write '/srv/ws/labels.sqlite' (disk full)", "cannot write '…/labels.sqlite' (disk full)"),
        ("no such folder: /srv/data/", "no such folder: …/data"),
        ("12.5 img/s, 3/4 done", "12.5 img/s, 3/4 done"),
        ("s3://bucket/prefix/LATEST and http://127.0.0.1:8000/api/x", "s3://bucket/prefix/LATEST and http://127.0.0.1:8000/api/x"),
        ("relative/path and ./here", "relative/path and ./here"),
    ],
)
def test_hide_paths_keeps_the_last_part_and_leaves_other_slashes(text, seen):
    assert hide_paths(text) == seen
    assert hide_paths({"a": [text, 3, None]}) == {"a": [seen, 3, None]}


def test_error_messages_name_server_paths_only_to_curators(curation_ws):
    """An error raised deep in the store names its file; a viewer's answer keeps only the file name."""
    from corral.api.app import create_app
    from corral.api.settings import Settings
    from corral.storage.workspace import Workspace

    db = Workspace(curation_ws.root).labels_db
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, " * 100)
    with TestClient(create_app(Settings(workspace=curation_ws.root)), raise_server_exceptions=False) as c:
        seen = {role: c.get("/api/labels", headers=curation_ws.auth(role)) for role in ("viewer", "curator")}
        anonymous = c.get("/api/labels")
    assert seen["curator"].status_code == 400 and str(db) in seen["curator"].json()["error"]
    assert seen["viewer"].status_code == 400 and str(db.parent) not in seen["viewer"].text
    assert "…/labels.sqlite" in seen["viewer"].json()["error"]
    assert anonymous.status_code == 401 and str(curation_ws.root) not in anonymous.text
