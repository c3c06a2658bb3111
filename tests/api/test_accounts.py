"""Accounts: passwords stored as Argon2id hashes, sign-in for a session cookie, sign-out here and
everywhere, the back-off on failed sign-ins, and roles enforced on every route of the app."""

from __future__ import annotations

import io
import json
import re

import pytest
from fastapi.testclient import TestClient

from corral.api.auth import ROLES, UserStore
from corral.api.signin_limit import DEVICE_COOKIE, SignInLimiter

PASSWORD = "a long walk on the beach"
CSRF = {"X-Corral-Request": "1"}


def _app(root, **settings):
    from corral.api.app import create_app
    from corral.api.settings import Settings

    return create_app(Settings(workspace=root, **settings))


def _set_cookie(response, name: str) -> str:
    """The Set-Cookie header that sets ``name``."""
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


@pytest.fixture
def ana(curation_ws):
    """A curator who signs in with a password (and has no token)."""
    UserStore(curation_ws.root).add("ana", role="curator", password=PASSWORD, token=False)
    return "ana"


def test_the_password_is_stored_only_as_an_argon2id_hash(curation_ws, ana):
    text = (curation_ws.root / "users.json").read_text()
    assert PASSWORD not in text and (curation_ws.root / "users.json").stat().st_mode & 0o077 == 0  # readable by the server's user only
    stored = json.loads(text)["users"]["ana"]
    assert "token_sha256" not in stored  # a person without a token
    # Argon2id, 64 MiB, 3 passes, 4 lanes, a 16-byte salt (22 base64 characters)
    assert re.fullmatch(r"\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", stored["password_argon2"])
    # the same password for another user: another salt, another hash
    UserStore(curation_ws.root).add("bob", role="viewer", password=PASSWORD, token=False)
    assert json.loads((curation_ws.root / "users.json").read_text())["users"]["bob"]["password_argon2"] != stored["password_argon2"]
    store = UserStore(curation_ws.root)
    assert store.check_password("ana", PASSWORD).role == "curator"
    assert store.check_password("ana", PASSWORD + " ") is None and store.check_password("nobody", PASSWORD) is None
    assert store.check_password("curator", PASSWORD) is None  # a token-only user has no password to match


def test_signing_in_sets_an_httponly_samesite_session_cookie(curation_ws, ana):
    with TestClient(_app(curation_ws.root)) as c:
        r = c.post("/api/signin", json={"name": "ana", "password": "wrong password"})
        assert r.status_code == 401 and r.json()["error"] == "wrong name or password" and "set-cookie" not in r.headers
        r = c.post("/api/signin", json={"name": "nobody", "password": PASSWORD})
        assert r.status_code == 401 and r.json()["error"] == "wrong name or password"  # the same words: names cannot be probed
        r = c.post("/api/signin", json={"name": "ana", "password": PASSWORD})
        assert r.status_code == 200 and r.json()["user"]["name"] == "ana" and r.json()["user"]["password"] is True
        flags = [f.strip().lower() for f in _set_cookie(r, "corral_session").split(";")]
        assert flags[0].startswith("corral_session=crs_") and {"httponly", "samesite=strict", "path=/", "max-age=2592000"} <= set(flags)
        assert "secure" not in flags  # plain HTTP on loopback
        assert c.get("/api/me").json()["user"]["name"] == "ana"
        # the session writes with the header a page elsewhere cannot send, and not without it
        assert c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "mug"}, headers=CSRF).status_code == 200
        assert c.post("/api/maps/main/actions/assign", json={"indices": [1], "label": "mug"}).status_code == 403
        assert PASSWORD not in (curation_ws.root / "sessions.json").read_text()
    with TestClient(_app(curation_ws.root), base_url="https://testserver") as c:  # over HTTPS the cookie is Secure
        r = c.post("/api/signin", json={"name": "ana", "password": PASSWORD})
        assert "secure" in [f.strip().lower() for f in _set_cookie(r, "corral_session").split(";")]
    with TestClient(_app(curation_ws.root, cookie_secure=True)) as c:  # and with --cookie-secure behind a proxy
        r = c.post("/api/signin", json={"name": "ana", "password": PASSWORD})
        assert "secure" in [f.strip().lower() for f in _set_cookie(r, "corral_session").split(";")]


def test_sign_out_everywhere_ends_every_session_of_the_user_only(curation_ws, ana):
    app = _app(curation_ws.root)
    with TestClient(app) as laptop:
        desktop, other = TestClient(app), TestClient(app)  # more browsers: their own cookie jars
        for c in (laptop, desktop):
            assert c.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 200
        assert other.post("/api/session", json={"token": curation_ws.tokens["curator2"]}).status_code == 200
        assert laptop.delete("/api/sessions").status_code == 403  # a cookie alone does not sign anyone out
        r = laptop.delete("/api/sessions", headers=CSRF)
        assert r.status_code == 200 and r.json() == {"ok": True, "ended": 2}
        laptop.cookies.set("corral_session", desktop.cookies["corral_session"])
        assert desktop.get("/api/me").status_code == 401 and laptop.get("/api/me").status_code == 401
        assert other.get("/api/me").json()["user"]["name"] == "curator2"  # someone else's session lives on
        assert laptop.get("/api/me", headers=curation_ws.auth("curator2")).status_code == 200  # tokens keep working
        # a new password (set by an admin) ends the sessions made with the old one
        assert desktop.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 200
        r = other.patch("/api/users/ana", json={"password": "another good one"}, headers=curation_ws.auth("admin"))
        assert r.status_code == 200
        assert desktop.get("/api/me").status_code == 401
        assert desktop.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 401
        assert desktop.post("/api/signin", json={"name": "ana", "password": "another good one"}).status_code == 200
        # ana changes her own password: her other browsers are signed out, this one stays in
        assert laptop.post("/api/signin", json={"name": "ana", "password": "another good one"}).status_code == 200
        change = {"current": "not it at all", "new": "the third one"}
        assert desktop.post("/api/me/password", json=change, headers=CSRF).status_code == 403
        r = desktop.post("/api/me/password", json={**change, "current": "another good one"}, headers=CSRF)
        assert r.status_code == 200 and desktop.get("/api/me").status_code == 200 and laptop.get("/api/me").status_code == 401


def test_failed_sign_ins_back_off_with_429_and_retry_after(curation_ws, ana):
    now = [1000.0]
    app = _app(curation_ws.root)
    app.state.ctx.signins = SignInLimiter(per_user=3, per_address=6, max_wait_s=60, forget_s=3600, clock=lambda: now[0])
    with TestClient(app) as own:
        attacker = TestClient(app)  # another cookie jar (same address: the test client's)
        # ana signed in from her own browser once: it is known from now on
        assert own.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 200
        assert own.cookies.get(DEVICE_COOKIE)
        assert own.delete("/api/session").status_code == 200
        for _ in range(4):  # the allowance, and one more: still checked, and it sets a wait of 1 s
            assert attacker.post("/api/signin", json={"name": "ana", "password": "guess guess"}).status_code == 401
        r = attacker.post("/api/signin", json={"name": "ana", "password": PASSWORD})
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "try again in 1 s" in r.json()["error"]
        assert "set-cookie" not in r.headers  # not even the right password gets in while it waits
        # ana at her own browser is not locked out by the stranger's guesses
        assert own.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 200
        now[0] += 1.5
        assert attacker.post("/api/signin", json={"name": "ana", "password": "guess guess"}).status_code == 401
        waits = []
        for _ in range(6):  # each failure after the wait doubles it, up to max_wait_s
            now[0] += 100
            assert attacker.post("/api/signin", json={"name": "ana", "password": "guess guess"}).status_code == 401
            r = attacker.post("/api/signin", json={"name": "ana", "password": PASSWORD})
            assert r.status_code == 429
            waits.append(int(r.headers["retry-after"]))
        assert waits == [4, 8, 16, 32, 60, 60]  # never longer than the cap
        now[0] += 61  # once the wait is over the right password works again, from anywhere
        assert attacker.post("/api/signin", json={"name": "ana", "password": PASSWORD}).status_code == 200
        # one address guessing over many names backs off too (counts are forgotten after forget_s)
        now[0] += 3601
        for i in range(7):
            assert attacker.post("/api/signin", json={"name": f"user{i}", "password": "guess guess"}).status_code == 401
        assert attacker.post("/api/signin", json={"name": "curator", "password": "guess guess"}).status_code == 429
    ops = [json.loads(line) for line in _export(curation_ws.root, "jsonl").splitlines()]
    refused = [o for o in ops if o["route"] == "/api/signin" and o["status"] == 429]
    assert len(refused) == 8 and {o["outcome"] for o in refused} == {"refused"}  # the refusals are in the operation log
    assert {o["user"] for o in refused} == {"ana", "curator"}  # the names that were tried, when they exist
    unknown = [o for o in ops if o["route"] == "/api/signin" and o["status"] == 401 and o["user"] == ""]
    assert len(unknown) == 7 and {o["detail"] for o in unknown} == {"sign-in as an unknown name"}  # a name nobody has is not written down


def _export(root, suffix: str) -> str:
    from corral.storage.exports import export

    out = root.parent / f"ops.{suffix}"
    export(root, format="operations", out=out, overwrite=True)
    return out.read_text()


# -- roles on every route ---------------------------------------------------------------------

#: routes that answer without a sign-in
PUBLIC = {("GET", "/api/health"), ("POST", "/api/signin"), ("POST", "/api/session"), ("DELETE", "/api/session"), ("GET", "/api/{rest:path}")}
#: the permission some routes must keep (None: anyone signed in); the walk covers every route, these pin the rules that matter most
PINNED = {
    ("GET", "/api/maps"): "read",
    ("GET", "/api/labels"): "read",
    ("POST", "/api/maps/{name}/actions/assign"): "write",
    ("POST", "/api/maps/{name}/actions/undo"): "write",
    ("POST", "/api/jobs"): "write",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("PATCH", "/api/users/{name}"): "admin",
    ("DELETE", "/api/users/{name}"): "admin",
    ("POST", "/api/recognize"): "recognize",
    ("GET", "/api/operations"): None,
    ("DELETE", "/api/sessions"): None,
    ("GET", "/api/me"): None,
}


def _routes(app):
    """(method, path template, dependant) of every route of the app, included routers' too."""
    for r in app.routes:
        found = list(r.effective_route_contexts()) if hasattr(r, "effective_route_contexts") else [r] if hasattr(r, "dependant") else []
        for route in found:
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                yield method, route.path, route.dependant


def _guards(dependant, out=None):
    """The names of the sign-in and permission dependencies a route runs."""
    out = set() if out is None else out
    for sub in dependant.dependencies:
        name = getattr(sub.call, "__name__", "")
        if name == "current_user" or name.startswith("require_"):
            out.add(name)
        _guards(sub, out)
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "main" if m.group(1) == "name" else "0", path)


def test_every_route_refuses_callers_without_a_sign_in_or_the_role(curation_ws):
    from corral.api.auth import PERMISSIONS

    app = _app(curation_ws.root)
    walked = 0
    with TestClient(app) as c:
        for method, path, dependant in _routes(app):
            if not path.startswith("/api/") or (method, path) in PUBLIC:
                continue
            guards = _guards(dependant)
            assert "current_user" in guards, f"{method} {path} answers without a sign-in"
            needs = [g.removeprefix("require_") for g in guards if g.startswith("require_")]
            assert len(needs) <= 1, (method, path, needs)
            permission = needs[0] if needs else None
            if (method, path) in PINNED:
                assert permission == PINNED[method, path], f"{method} {path} needs {permission!r}, expected {PINNED[method, path]!r}"
            url = _concrete(path)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            r = c.request(method, url, **body)
            assert r.status_code == 401, f"{method} {url} without a sign-in: {r.status_code} {r.text[:200]}"
            c.cookies.set("corral_session", "crs_made-up")  # a session id nobody was given
            r = c.request(method, url, **body)
            c.cookies.clear()
            assert r.status_code == 401, f"{method} {url} with a made-up session: {r.status_code} {r.text[:200]}"
            refused = [role for role in ROLES if permission is not None and role not in PERMISSIONS[permission]]
            for role in refused:
                r = c.request(method, url, headers=curation_ws.auth(role), **body)
                assert r.status_code == 403, f"{method} {url} as {role}: {r.status_code} {r.text[:200]}"
                assert permission in r.json()["error"]
            walked += 1
    assert walked >= 40  # the walk saw the whole app, not an empty table


def test_roles_as_documented(curation_ws):
    """The table of docs/accounts.md, acted out: a viewer cannot label, a curator cannot manage
    users nor read others' operations, a service only recognises, an admin does everything."""
    with TestClient(_app(curation_ws.root)) as c:
        assign = {"indices": [0], "label": "mug"}
        assert c.post("/api/maps/main/actions/assign", json=assign, headers=curation_ws.auth("viewer")).status_code == 403
        assert c.post("/api/maps/main/actions/assign", json=assign, headers=curation_ws.auth("curator")).status_code == 200
        assert c.post("/api/users", json={"name": "eve", "role": "admin", "password": PASSWORD}, headers=curation_ws.auth("curator")).status_code == 403
        assert c.patch("/api/users/curator", json={"role": "admin"}, headers=curation_ws.auth("curator")).status_code == 403
        assert c.get("/api/operations?everyone=true", headers=curation_ws.auth("curator")).status_code == 403
        assert c.get("/api/operations?user=admin", headers=curation_ws.auth("viewer")).status_code == 403
        assert c.get("/api/labels", headers=curation_ws.auth("service")).status_code == 403
        r = c.post("/api/users", json={"name": "eve", "role": "viewer", "password": PASSWORD, "token": False}, headers=curation_ws.auth("admin"))
        assert r.status_code == 201 and r.json()["token"] is None and r.json()["user"]["password"] is True
        assert c.patch("/api/users/eve", json={"role": "curator"}, headers=curation_ws.auth("admin")).json()["user"]["role"] == "curator"
        assert c.patch("/api/users/eve", json={"password": "short"}, headers=curation_ws.auth("admin")).status_code == 400
        assert c.patch("/api/users/admin", json={"role": "viewer"}, headers=curation_ws.auth("admin")).status_code == 400  # not yourself
        # the curator's refusals are in their log, which an admin reads
        ops = c.get("/api/operations?user=curator", headers=curation_ws.auth("admin")).json()["operations"]
        assert [(o["method"], o["route"], o["status"], o["outcome"]) for o in ops] == [
            ("GET", "/api/operations", 403, "refused"),
            ("PATCH", "/api/users/{name}", 403, "refused"),
            ("POST", "/api/users", 403, "refused"),
            ("POST", "/api/maps/{name}/actions/assign", 200, "ok"),
        ]
        assert c.delete("/api/users/eve", headers=curation_ws.auth("admin")).status_code == 200
        assert c.post("/api/signin", json={"name": "eve", "password": PASSWORD}).status_code == 401


def test_corral_users_add_with_a_password_from_stdin(curation_ws, monkeypatch, capsys):
    from corral.api.cli import main

    ws = str(curation_ws.root)
    monkeypatch.setattr("sys.stdin", io.StringIO("typed by a script\n"))
    assert main(["users", "add", "kim", "--role", "curator", "--password", "--workspace", ws]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out == {"user": "kim", "role": "curator", "password": True, "token": None}
    assert UserStore(curation_ws.root).check_password("kim", "typed by a script") is not None
    assert "typed by a script" not in (curation_ws.root / "users.json").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("a brand new secret\n"))
    assert main(["users", "passwd", "kim", "--workspace", ws]) == 0
    assert UserStore(curation_ws.root).check_password("kim", "a brand new secret") is not None
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "passwd", "kim", "--workspace", ws]) == 2
    assert capsys.readouterr().err.strip().endswith("password: use 8 to 1,024 characters")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["users", "add", "lee", "--role", "viewer", "--password", "--workspace", ws]) == 2
    assert "gave no password" in capsys.readouterr().err
    assert main(["users", "role", "kim", "viewer", "--workspace", ws]) == 0
    assert UserStore(curation_ws.root).get("kim").role == "viewer"
