"""The operation log: every request that changes something, and every failed one, per user, with
the label-store event it produced; read back by its user (the history panel's data, with undo),
by admins for everyone, and exported. A log that cannot be written never costs the action."""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3

from fastapi.testclient import TestClient

from corral.api.oplog import OpLogWriter
from corral.storage.labels import LabelStore
from corral.storage.oplog import COLUMNS, FILE_NAME, SQLiteOperationLog


def _app(root):
    from corral.api.app import create_app
    from corral.api.settings import Settings

    return create_app(Settings(workspace=root))


def _mine(c, auth, **params):
    r = c.get("/api/operations", headers=auth, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_writes_and_failures_are_logged_per_user_with_their_event(curation_ws):
    cur, viewer = curation_ws.auth("curator"), curation_ws.auth("viewer")
    with TestClient(_app(curation_ws.root)) as c:
        etag = c.get("/api/maps/main", headers=cur).json()["etag"]
        ok = c.post("/api/maps/main/actions/assign", json={"indices": [0, 1, 2, 3], "label": "mug", "etag": etag}, headers=cur).json()
        assert c.post("/api/maps/main/actions/assign", json={"indices": [], "label": "mug"}, headers=cur).status_code == 400
        assert c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "cup", "etag": "an-old-map"}, headers=cur).status_code == 409
        assert c.post("/api/maps/main/actions/rename", json={"old": "no such label", "new": "x"}, headers=cur).status_code == 400
        assert c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "cup"}, headers=viewer).status_code == 403
        assert c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "cup"}).status_code == 401
        assert c.get("/api/maps/nowhere", headers=viewer).status_code == 404
        assert c.get("/api/labels", headers=viewer).status_code == 200  # a read that worked: not logged
        assert c.post("/api/maps/main/points", json={"indices": [0, 1]}, headers=cur).status_code == 200  # a read with a body: not logged either

        mine = _mine(c, cur)
        rows = [(o["method"], o["route"], o["status"], o["outcome"], o["items"], o["event_id"]) for o in mine["operations"]]
        assert rows == [
            ("POST", "/api/maps/{name}/actions/rename", 400, "invalid", None, None),
            ("POST", "/api/maps/{name}/actions/assign", 409, "conflict", None, None),
            ("POST", "/api/maps/{name}/actions/assign", 400, "invalid", None, None),
            ("POST", "/api/maps/{name}/actions/assign", 200, "ok", 4, ok["event_id"]),
        ]
        latest, first = mine["operations"][0], mine["operations"][-1]
        assert "no such label" in latest["detail"] and latest["user"] == "curator" and latest["path"] == "/api/maps/main/actions/rename"
        assert first["event"] == {"kind": "assign", "label": "mug", "target": None, "undone": False}
        assert mine["next_undo"] == ok["event_id"]
        with LabelStore.open(curation_ws.root) as store:  # the event the entry names is the store's
            (event,) = store.events(since=ok["event_id"] - 1, limit=1)
        assert (event.user, event.kind, event.item_count) == ("curator", "assign", 4)

        viewer_ops = _mine(c, viewer)["operations"]
        assert [(o["route"], o["status"], o["outcome"]) for o in viewer_ops] == [("/api/maps/{name}", 404, "not found"), ("/api/maps/{name}/actions/assign", 403, "refused")]
        everyone = _mine(c, curation_ws.auth("admin"), everyone="true")["operations"]
        anonymous = [o for o in everyone if o["user"] == ""]
        assert [(o["route"], o["status"], o["detail"]) for o in anonymous] == [("/api/maps/{name}/actions/assign", 401, anonymous[0]["detail"])]
        assert "sign in" in anonymous[0]["detail"]  # refused before its body was read, and logged all the same
        assert len(everyone) == 7 and all(o["at"] > 0 and o["client"] for o in everyone)


def test_undo_from_the_history_is_the_users_own_undo(curation_ws):
    cur = curation_ws.auth("curator")
    with TestClient(_app(curation_ws.root)) as c:
        first = c.post("/api/maps/main/actions/assign", json={"indices": [0, 1], "label": "mug"}, headers=cur).json()
        second = c.post("/api/maps/main/actions/assign", json={"indices": [2], "label": "bowl"}, headers=cur).json()
        c.post("/api/maps/main/actions/assign", json={"indices": [3], "label": "vase"}, headers=curation_ws.auth("curator2"))  # someone else
        assert _mine(c, cur)["next_undo"] == second["event_id"]
        undo = c.post("/api/maps/main/actions/undo", json={}, headers=cur).json()
        mine = _mine(c, cur)
        by_event = {o["event_id"]: o for o in mine["operations"]}
        assert by_event[second["event_id"]]["event"]["undone"] is True
        assert by_event[undo["event_id"]]["event"] == {"kind": "undo", "label": None, "target": second["event_id"], "undone": None}
        assert mine["next_undo"] == first["event_id"]  # the next undo: the action before, not curator2's
        c.post("/api/maps/main/actions/redo", json={}, headers=cur)
        mine = _mine(c, cur)
        assert mine["next_undo"] == second["event_id"]
        assert {o["event_id"]: o for o in mine["operations"]}[second["event_id"]]["event"]["undone"] is False
        page = _mine(c, cur, limit=2)  # pages, newest first
        assert page["more"] is True and page["operations"] == mine["operations"][:2]
        older = _mine(c, cur, limit=2, before=page["operations"][-1]["id"])["operations"]
        assert [o["id"] for o in older] == [o["id"] for o in mine["operations"][2:4]]


def test_a_log_that_cannot_be_written_costs_the_action_nothing(curation_ws, caplog):
    app = _app(curation_ws.root)
    app.state.ctx.oplog.close()
    path = curation_ws.root / FILE_NAME
    writer = OpLogWriter(SQLiteOperationLog(path, timeout_s=0.05), retry_s=0.05)
    app.state.ctx.oplog = writer
    blocker = sqlite3.connect(path, isolation_level=None)
    cur = curation_ws.auth("curator")
    with TestClient(app) as c, caplog.at_level(logging.WARNING, logger="corral.api.oplog"):
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the log: every write fails
        try:
            r = c.post("/api/maps/main/actions/assign", json={"indices": [0, 1, 2], "label": "mug"}, headers=cur)
            assert r.status_code == 200  # acknowledged, and stored
            assert writer.flush(1.0) is False
            r = c.get("/api/operations", headers=cur)
            assert r.status_code == 503 and r.headers["retry-after"] == "2" and "behind" in r.json()["error"]
            assert "could not write" in caplog.text and "database is locked" in caplog.text
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert writer.flush(10.0) is True  # the rows were kept, and are written once it can
        assert "the operation log is written again" in caplog.text
        ops = _mine(c, cur)["operations"]
        assert [(o["route"], o["status"]) for o in ops] == [("/api/operations", 503), ("/api/maps/{name}/actions/assign", 200)]
    with LabelStore.open(curation_ws.root) as store:
        assert sum(1 for v in store.item_labels().values() if v == "mug") == 3


def test_corral_export_operations_as_csv_and_jsonl(curation_ws, capsys):
    from corral.api.cli import main

    ws = str(curation_ws.root)
    out_csv, out_jsonl = curation_ws.root.parent / "ops.csv", curation_ws.root.parent / "ops.jsonl"
    assert main(["export", "--workspace", ws, "--format", "operations", "--out", str(out_csv)]) == 0  # no log yet: a header
    assert out_csv.read_text().splitlines() == [",".join(COLUMNS)]
    with TestClient(_app(curation_ws.root)) as c:
        c.post("/api/maps/main/actions/assign", json={"indices": [0, 1], "label": 'mug, "big"'}, headers=curation_ws.auth("curator"))
        c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "cup"}, headers=curation_ws.auth("viewer"))
    capsys.readouterr()
    assert (curation_ws.root / FILE_NAME).stat().st_mode & 0o077 == 0  # who did what: for the server's user only
    assert main(["export", "--workspace", ws, "--format", "operations", "--out", str(out_csv), "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["rows"] == 2
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [(r["user"], r["status"], r["outcome"], r["items"], r["detail"]) for r in rows] == [
        ("curator", "200", "ok", "2", "assign"),
        ("viewer", "403", "refused", "", "user 'viewer' has role 'viewer', which may not write"),
    ]
    assert rows[0]["at"].endswith("Z") and rows[0]["event_id"] == "1"
    assert main(["export", "--workspace", ws, "--format", "operations", "--out", str(out_jsonl)]) == 0
    lines = [json.loads(x) for x in out_jsonl.read_text().splitlines()]
    assert [list(x) for x in lines] == [list(COLUMNS)] * 2 and lines[1]["status"] == 403 and lines[0]["event_id"] == 1
