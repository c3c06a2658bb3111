"""Users, tokens and roles: who may read, write, recognise and manage users."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from corral.api.auth import AuthError, UserStore
from corral.api.jobs import CLI_BOOT


def test_tokens_are_stored_hashed_and_work(tmp_path):
    users = UserStore(tmp_path)
    token = users.add("ana", role="curator")
    assert token.startswith("crl_") and len(token) > 40
    text = (tmp_path / "users.json").read_text()
    assert token not in text
    assert users.authenticate(token).name == "ana"
    assert users.authenticate(token + "x") is None
    assert users.authenticate("") is None
    with pytest.raises(AuthError, match="exists"):
        users.add("ana", role="viewer")
    new = users.add("ana", role="viewer", replace=True)
    assert users.authenticate(token) is None and users.authenticate(new).role == "viewer"
    with pytest.raises(AuthError, match="role"):
        users.add("bob", role="god")
    with pytest.raises(AuthError, match="user name"):
        users.add("../x", role="viewer")


def test_reads_need_a_token(client, curation_ws):
    r = client.get("/api/maps")
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert client.get("/api/maps", headers={"Authorization": "Bearer crl_nope"}).status_code == 401
    assert client.get("/api/health").json()["ok"] is True
    assert client.get("/").status_code == 200  # the page itself holds no data


def test_unknown_maps_cannot_be_probed_without_a_token(client, curation_ws):
    """Without a token, a map that exists and one that does not both answer 401, so map names
    cannot be enumerated (issue 13, item 4); with a token the unknown one is a 404."""
    for path in ("/api/maps/{}/points.bin", "/api/maps/{}/learn", "/api/maps/{}/labels.bin"):
        real = client.get(path.format("main"))
        ghost = client.get(path.format("no-such-map"))
        assert real.status_code == ghost.status_code == 401, (path, real.status_code, ghost.status_code)
        assert client.post(path.format("no-such-map").rsplit("/", 1)[0] + "/actions/assign", json={"indices": [0], "label": "x"}).status_code == 401
    assert client.get("/api/maps/no-such-map/points.bin", headers=curation_ws.auth("viewer")).status_code == 404


@pytest.mark.parametrize("role,status", [("viewer", 403), ("service", 403), ("curator", 200), ("admin", 200)])
def test_writes_by_role(client, curation_ws, role, status):
    r = client.post("/api/maps/main/actions/assign", headers=curation_ws.auth(role), json={"indices": [0, 1, 2], "label": "mug"})
    assert r.status_code == status, r.text
    if status == 403:
        assert role in r.json()["error"]


def test_service_role_cannot_read_the_map(client, curation_ws):
    assert client.get("/api/maps/main/points.bin", headers=curation_ws.auth("service")).status_code == 403


def test_every_event_records_its_user(client, curation_ws):
    client.post("/api/maps/main/actions/assign", headers=curation_ws.auth("curator"), json={"indices": [0, 1], "label": "a"})
    client.post("/api/maps/main/actions/assign", headers=curation_ws.auth("admin"), json={"indices": [2], "label": "b"})
    events = client.get("/api/events", headers=curation_ws.auth("viewer")).json()["events"]
    assert [(e["user"], e["kind"]) for e in events] == [("curator", "assign"), ("admin", "assign")]


def test_cookie_session_needs_the_csrf_header_to_write(client, curation_ws):
    r = client.post("/api/session", json={"token": curation_ws.tokens["curator"]})
    assert r.status_code == 200 and r.json()["user"]["name"] == "curator"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/api/me").json()["user"]["role"] == "curator"  # the cookie now signs requests in
    body = {"indices": [0], "label": "x"}
    assert client.post("/api/maps/main/actions/assign", json=body).status_code == 403
    assert client.post("/api/maps/main/actions/assign", json=body, headers={"X-Corral-Request": "1"}).status_code == 200
    client.delete("/api/session")
    client.cookies.clear()
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/session", json={"token": "crl_wrong"}).status_code == 401


def test_admin_manages_users(client, curation_ws):
    assert client.get("/api/users", headers=curation_ws.auth("curator")).status_code == 403
    r = client.post("/api/users", headers=curation_ws.auth("admin"), json={"name": "zoe", "role": "viewer"})
    assert r.status_code == 201
    token = r.json()["token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["user"]["name"] == "zoe"
    assert client.post("/api/users", headers=curation_ws.auth("admin"), json={"name": "zoe2", "role": "boss"}).status_code == 400
    assert client.delete("/api/users/zoe", headers=curation_ws.auth("admin")).status_code == 200
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_cli_users_add_prints_a_token_that_works(tmp_path, client, curation_ws):
    out = subprocess.run(
        [sys.executable, "-c", CLI_BOOT, "users", "add", "kim", "--role", "curator", "--workspace", str(curation_ws.root)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    lines = out.stdout.strip().splitlines()
    token = lines[0]
    assert json.loads(lines[-1])["token"] == token
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["user"]
    assert me == {**me, "name": "kim", "role": "curator"}
    bad = subprocess.run([sys.executable, "-c", CLI_BOOT, "users", "add", "kim", "--role", "curator", "--workspace", str(curation_ws.root)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "exists" in bad.stderr and "Traceback" not in bad.stderr


def test_a_method_not_allowed_says_which_are(client, curation_ws):
    """A 405 carries ``Allow`` (issue 13, item 12): the short JSON answer kept the status but dropped
    the header."""
    r = client.delete("/api/maps/main/points.bin", headers=curation_ws.auth("viewer"))
    assert r.status_code == 405 and "GET" in r.headers.get("allow", ""), (r.status_code, dict(r.headers))
    assert r.json()["status"] == 405
