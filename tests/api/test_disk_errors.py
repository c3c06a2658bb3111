"""A full disk and a read-only workspace say what is wrong (507 / 503, one clear line from the
command line), and a read-only workspace can still be browsed (issue 13, item 8).

A full disk is simulated by raising ENOSPC (or SQLite's "disk is full") at the write boundary; the
read-only workspace is a real read-only tmpfs where this test may mount one (root), else skipped."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess

import pytest
from fastapi.testclient import TestClient

from corral.api.app import create_app
from corral.api.cli import main
from corral.api.settings import Settings
from tests.api.conftest import build_curation_ws


def _app(root):
    return TestClient(create_app(Settings(workspace=root)), raise_server_exceptions=False)


def test_a_label_action_on_a_full_disk_is_507_and_says_so(curation_ws, monkeypatch):
    from corral.storage import events

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(events.Txn, "flush", full)
    with _app(curation_ws.root) as c:
        r = c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "x"}, headers=curation_ws.auth("curator"))
        assert r.status_code == 507, r.text
        assert "disk is full" in r.json()["error"] and "internal error" not in r.text
        assert c.get("/api/labels", headers=curation_ws.auth("viewer")).json()["labels"] == []


def test_thumbnails_are_served_when_the_cache_cannot_be_written(curation_ws, monkeypatch):
    from corral.api import thumbs

    def enospc(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(thumbs, "atomic_write_bytes", enospc)
    with _app(curation_ws.root) as c:
        r = c.get(f"/api/items/{curation_ws.image_ids[0]}/thumb", headers=curation_ws.auth("viewer"))
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
        assert c.get("/api/maps/main/atlas/0/0.jpg", headers=curation_ws.auth("viewer")).status_code == 200


@contextlib.contextmanager
def _read_only_workspace(tmp_path, *, single_user: bool = False):
    """A labelled workspace on a real tmpfs remounted read-only; ``single_user``: without the
    users file, as `corral serve` finds a workspace it has not served before."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        cur = build_curation_ws(mnt / "ws", extra_points=200)
        with _app(cur.root) as c:  # a store used once, as a served workspace's is
            c.post("/api/maps/main/actions/assign", json={"indices": [0, 1], "label": "mug"}, headers=cur.auth("curator"))
        if single_user:
            (cur.root / "users.json").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield cur
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def read_only_ws(tmp_path):
    with _read_only_workspace(tmp_path) as cur:
        yield cur


def test_a_read_only_workspace_is_browsed_and_refuses_writes_clearly(read_only_ws):
    cur = read_only_ws
    with _app(cur.root) as c:
        viewer, curator = cur.auth("viewer"), cur.auth("curator")
        assert [lb["name"] for lb in c.get("/api/labels", headers=viewer).json()["labels"]] == ["mug"]
        assert c.get("/api/maps/main/labels.bin", headers=viewer).status_code == 200
        assert c.get("/api/maps/main/points.bin", headers=viewer).status_code == 200
        assert c.get(f"/api/items/{cur.image_ids[0]}/thumb", headers=viewer).status_code == 200
        r = c.post("/api/maps/main/actions/assign", json={"indices": [2], "label": "mug"}, headers=curator)
        assert r.status_code == 503 and "read-only" in r.json()["error"] and "not a Corral label store" not in r.text, r.text


def test_corral_map_on_a_full_disk_prints_one_line(tmp_path, capsys, monkeypatch):
    from corral.pipeline import mapping

    def full(**kw):  # what the map stage raises when its first file write finds the disk full
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "maps" / "x" / "points.parquet"))

    monkeypatch.setattr(mapping, "build_map", full)
    code = main(["-q", "map", "--workspace", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "corral map: error: the workspace's disk is full" in err


def test_corral_map_with_a_name_over_255_bytes_is_a_clear_error(tmp_path, capsys):
    code = main(["-q", "map", "--workspace", str(tmp_path), "--name", "é" * 130])
    err = capsys.readouterr().err
    assert code == 2 and "255 bytes" in err and "Traceback" not in err


def test_corral_serve_in_single_user_mode_browses_a_read_only_workspace(tmp_path):
    """`corral serve` makes the single user a new token each start and stored it in users.json, so
    on a read-only workspace it stopped with "the workspace is read-only" before serving anything.
    Now the token is kept in memory: the link signs in, the map and labels read, writes get 503."""
    import http.cookiejar
    import json
    import sys
    import time
    import urllib.error
    import urllib.request

    from corral.api.jobs import CLI_BOOT
    from tests.api.conftest import free_port

    with _read_only_workspace(tmp_path, single_user=True) as cur:
        port = free_port()
        p = subprocess.Popen([sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(cur.root), "--port", str(port), "--no-warm-split"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            assert line, p.communicate(timeout=30)[1][-2000:]  # it stopped without a link
            link = json.loads(line)
            assert link["single_user"] and "token=" in link["url"]
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            deadline = time.time() + 60
            while True:
                try:
                    browser.open(link["url"], timeout=10).read()  # the link: a session cookie, then the page
                    break
                except OSError:
                    assert time.time() < deadline and p.poll() is None, "the server did not start"
                    time.sleep(0.2)
            base = f"http://127.0.0.1:{port}"
            assert json.loads(browser.open(f"{base}/api/me").read())["user"]["name"] == "local"
            assert [lb["name"] for lb in json.loads(browser.open(f"{base}/api/labels").read())["labels"]] == ["mug"]
            write = urllib.request.Request(f"{base}/api/maps/main/actions/assign", data=b'{"indices": [2], "label": "mug"}', headers={"Content-Type": "application/json", "X-Corral-Request": "1"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                browser.open(write)
            assert refused.value.code == 503 and "read-only" in json.loads(refused.value.read())["error"]
        finally:
            p.terminate()
            p.communicate(timeout=30)
        assert not (cur.root / "users.json").exists()
