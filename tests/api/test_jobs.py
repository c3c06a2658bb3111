"""Jobs started from the viewer: validation up front, a real subprocess, its progress and result."""

from __future__ import annotations

import time

import pytest


def _wait(client, auth, job_id, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=auth).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running after {timeout}s")


def test_job_sources_are_checked_before_anything_runs(client, curation_ws, tmp_path):
    auth = curation_ws.auth("curator")
    r = client.post("/api/jobs", headers=auth, json={"kind": "embed", "source": "relative/path"})
    assert r.status_code == 400 and "absolute" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(tmp_path / "missing")})
    assert r.status_code == 403 and "--source-root" in r.json()["error"]  # missing or not allowed: one answer
    r = client.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(tmp_path)})
    assert r.status_code == 403 and "--source-root" in r.json()["error"]  # not local mode, no roots
    r = client.post("/api/jobs", headers=auth, json={"kind": "dance"})
    assert r.status_code == 422
    assert client.post("/api/jobs", headers=curation_ws.auth("viewer"), json={"kind": "map"}).status_code == 403
    assert client.get("/api/jobs", headers=curation_ws.auth("viewer")).json() == {"jobs": []}


def test_a_misspelt_job_option_is_refused_not_dropped(client, curation_ws):
    auth = curation_ws.auth("curator")
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"nmae": "second", "update": True}})
    assert r.status_code == 422 and "nmae" in r.json()["error"] and "embeddings, name, update" in r.json()["error"]
    r = client.post("/api/jobs", headers=auth, json={"kind": "map", "options": {"model": "timm:x"}})  # an embed option
    assert r.status_code == 422 and "model" in r.json()["error"]
    assert client.get("/api/jobs", headers=auth).json() == {"jobs": []}  # nothing started


def test_a_curator_cannot_probe_which_server_folders_exist(curation_ws, tmp_path):
    """Outside the allowed folders, an existing folder, a missing one, a file and a link all get the
    same answer (status and words, less the path itself), and so does a missing path inside them:
    the job API tells nobody which server folders exist. Local mode, where the user owns the
    machine, still says "no such folder"."""
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.settings import Settings

    allowed = tmp_path / "allowed"
    (allowed / "real").mkdir(parents=True)
    (allowed / "a-file.png").write_bytes(b"x")
    outside = tmp_path / "outside"
    (outside / "exists").mkdir(parents=True)
    (allowed / "link-out").symlink_to(outside / "exists")
    probes = [outside / "exists", outside / "missing", outside, tmp_path, "/etc", "/no-such-top-folder", "/proc/self", str(allowed) + "/../outside/exists"]
    probes += [allowed / "missing", allowed / "real" / "missing" / "deeper", allowed / "a-file.png", allowed / "link-out"]
    auth = curation_ws.auth("curator")
    with TestClient(create_app(Settings(workspace=curation_ws.root, source_roots=[allowed]))) as c:
        answers = set()
        for probe in probes:
            r = c.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(probe)})
            answers.add((r.status_code, r.json()["error"].replace(repr(str(probe)), "SOURCE")))
        assert c.get("/api/jobs", headers=auth).json()["jobs"] == []
        assert c.app.state.ctx.jobs.check_source(str(allowed / "real")) == str((allowed / "real").resolve())
    assert len(answers) == 1, answers
    status, words = answers.pop()
    assert status == 403 and "--source-root" in words and str(allowed) in words
    with TestClient(create_app(Settings(workspace=curation_ws.root, allow_any_source=True))) as c:
        r = c.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(outside / "missing")})
        assert r.status_code == 400 and "no such folder" in r.json()["error"]


def test_a_failing_job_reports_why(client, tmp_path):
    """A real `corral map` subprocess on a workspace with no embeddings fails with its own message."""
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings

    ws = tmp_path / "empty"
    ws.mkdir()
    token = UserStore(ws).add("c", role="curator")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(Settings(workspace=ws))) as c:
        job = c.post("/api/jobs", headers=auth, json={"kind": "map"}).json()
        assert job["status"] in ("queued", "running")
        done = _wait(c, auth, job["id"], timeout=300)
    assert done["status"] == "failed"
    assert done["error"] and "Traceback" not in done["error"]


def test_a_job_that_cannot_start_fails_with_the_reason_and_blocks_nothing(client, curation_ws):
    """An unwritable job log folder (a read-only workspace, a full cache) fails the job at once with
    the reason; it does not stay "queued" and refuse every later job."""
    auth = curation_ws.auth("curator")
    jobs_dir = curation_ws.root / "cache" / "jobs"
    jobs_dir.parent.mkdir(parents=True, exist_ok=True)
    jobs_dir.write_text("a file where the job logs should go")  # fails even for root, unlike chmod
    first = client.post("/api/jobs", headers=auth, json={"kind": "map"})
    assert first.status_code == 202
    done = _wait(client, auth, first.json()["id"], timeout=10)
    assert done["status"] == "failed" and "could not start" in done["error"] and "log" in done["error"]
    assert str(curation_ws.root) not in done["error"] and done["ended_at"]
    second = client.post("/api/jobs", headers=auth, json={"kind": "map"})
    assert second.status_code == 202, second.text  # not 409 "another job is running"
    assert _wait(client, auth, second.json()["id"], timeout=10)["status"] == "failed"


def test_a_queued_job_can_be_cancelled_before_its_process_starts(client, curation_ws, monkeypatch):
    import subprocess
    import sys
    import threading

    from corral.api import jobs as jobs_module

    auth = curation_ws.auth("curator")
    release, started = threading.Event(), []
    real_popen = subprocess.Popen

    def slow_popen(cmd, **kw):  # the process starts only once the test says so
        release.wait(20)
        proc = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw)
        started.append(proc)
        return proc

    monkeypatch.setattr(jobs_module.subprocess, "Popen", slow_popen)
    job = client.post("/api/jobs", headers=auth, json={"kind": "map"}).json()
    assert job["status"] == "queued"
    r = client.post(f"/api/jobs/{job['id']}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    release.set()  # the process starts after all: it is stopped, and the job stays cancelled
    deadline = time.time() + 20
    while not (started and started[0].poll() is not None) and time.time() < deadline:
        time.sleep(0.05)
    assert started and started[0].poll() is not None, "the cancelled job's process kept running"
    assert client.get(f"/api/jobs/{job['id']}", headers=auth).json()["status"] == "cancelled"
    nxt = client.post("/api/jobs", headers=auth, json={"kind": "map"})
    assert nxt.status_code == 202, nxt.text
    assert client.post(f"/api/jobs/{nxt.json()['id']}/cancel", headers=auth).json()["status"] == "cancelled"


@pytest.mark.slow
def test_embed_job_runs_and_reports_progress(tmp_path):
    """The whole path: start an embed job on a folder of real images and watch it finish."""
    import shutil

    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings
    from tests.generated import generated_data

    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted(generated_data("images", "obj05").glob("*.png"))[:8]:
        shutil.copy(p, src / p.name)
    ws = tmp_path / "ws"
    ws.mkdir()
    token = UserStore(ws).add("c", role="curator")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(Settings(workspace=ws, source_roots=[tmp_path]))) as c:
        job = c.post("/api/jobs", headers=auth, json={"kind": "embed", "source": str(src)}).json()
        busy = c.post("/api/jobs", headers=auth, json={"kind": "map"})
        assert busy.status_code == 409
        done = _wait(c, auth, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["embedded"] == 8 and done["total"] == 8 and done["fraction"] == 1.0
