"""Issue 13, item 3: the viewer's cookie holds a server-side session, not the long-lived token; the
single-user link's token is exchanged once and dropped from the URL; signing out ends the session;
no token reaches the logs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from fastapi.testclient import TestClient

from corral.api.server import RedactTokens, redact
from corral.api.sessions import SessionStore
from tests.api.conftest import free_port


def _app(root, **settings):
    from corral.api.app import create_app
    from corral.api.settings import Settings

    return create_app(Settings(workspace=root, **settings))


def _cookie(response) -> str:
    """The session cookie's value from a Set-Cookie header."""
    m = re.search(r"corral_session=([^;]+)", response.headers.get("set-cookie", ""))
    assert m, response.headers.get("set-cookie")
    return m.group(1)


def test_the_link_token_is_exchanged_for_a_session_and_dropped_from_the_url(curation_ws):
    token = curation_ws.tokens["admin"]
    with TestClient(_app(curation_ws.root), follow_redirects=False) as c:
        r = c.get(f"/?map=main&token={token}")
        assert r.status_code == 303 and r.headers["location"] == "/?map=main"  # the clean URL
        sid = _cookie(r)
        assert sid.startswith("crs_") and token not in r.headers["set-cookie"]
        flags = r.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
        assert c.get("/api/me").json()["user"]["name"] == "admin"  # the session signs requests in
        # a bad token: still the clean URL, but no session (the viewer then asks for a token)
        c.cookies.clear()
        r = c.get("/?token=crl_nope")
        assert r.status_code == 303 and r.headers["location"] == "/" and "set-cookie" not in r.headers
        assert c.get("/api/me").status_code == 401
    stored = (curation_ws.root / "sessions.json").read_text()
    assert sid not in stored and token not in stored  # the file keeps only hashes


def test_the_old_token_cookie_no_longer_signs_in(curation_ws):
    with TestClient(_app(curation_ws.root)) as c:
        c.cookies.set("corral_token", curation_ws.tokens["admin"])
        assert c.get("/api/me").status_code == 401


def test_signing_out_ends_the_session_on_the_server(curation_ws):
    with TestClient(_app(curation_ws.root)) as c:
        r = c.post("/api/session", json={"token": curation_ws.tokens["curator"]})
        sid = _cookie(r)
        assert sid != curation_ws.tokens["curator"]
        assert c.get("/api/me").json()["user"]["name"] == "curator"
        assert c.delete("/api/session").json() == {"ok": True, "ended": True}
        # the browser forgets the cookie, and one kept anyway (copied, stolen) works no more
        c.cookies.clear()
        c.cookies.set("corral_session", sid)
        r = c.get("/api/me")
        assert r.status_code == 401 and "ended" in r.json()["error"]
        assert c.post("/api/maps/main/actions/assign", json={"indices": [0], "label": "x"}, headers={"X-Corral-Request": "1"}).status_code == 401
        # bearer tokens (services, scripts) are untouched
        assert c.get("/api/me", headers=curation_ws.auth("curator")).status_code == 200


def test_sessions_survive_a_restart_but_not_a_new_token(curation_ws):
    from corral.api.auth import UserStore

    with TestClient(_app(curation_ws.root)) as c:
        sid = _cookie(c.post("/api/session", json={"token": curation_ws.tokens["viewer"]}))
    with TestClient(_app(curation_ws.root)) as c:  # the server restarted
        c.cookies.set("corral_session", sid)
        assert c.get("/api/me").json()["user"]["name"] == "viewer"
        UserStore(curation_ws.root).add("viewer", role="viewer", replace=True)  # `corral users add --rotate`
        assert c.get("/api/me").status_code == 401
        c.cookies.set("corral_session", _cookie(c.post("/api/session", json={"token": curation_ws.tokens["curator"]})))
        UserStore(curation_ws.root).remove("curator")
        assert c.get("/api/me").status_code == 401


def test_sessions_expire_when_idle_and_when_old(tmp_path):
    now = [1_000_000.0]
    store = SessionStore(tmp_path, idle_s=100, max_s=1000, clock=lambda: now[0])
    idle, busy = store.start("ana", "h"), store.start("bob", "h")
    now[0] += 60
    assert store.find(idle) and store.find(busy)
    now[0] += 50
    assert store.find(busy)
    now[0] += 60
    assert store.find(idle) is None  # unused for 110 s
    for _ in range(17):  # used every 50 s ...
        assert store.find(busy), now[0]
        now[0] += 50
    assert store.find(busy) is None  # ... but over 1,000 s old
    assert not SessionStore(tmp_path, idle_s=100, max_s=1000, clock=lambda: now[0]).find(busy)  # and gone from the file


def test_the_cookie_is_secure_when_asked_or_over_https(curation_ws):
    token = {"token": curation_ws.tokens["viewer"]}
    with TestClient(_app(curation_ws.root, cookie_secure=True)) as c:
        assert "secure" in c.post("/api/session", json=token).headers["set-cookie"].lower()
    with TestClient(_app(curation_ws.root), base_url="https://testserver") as c:
        assert "secure" in c.post("/api/session", json=token).headers["set-cookie"].lower()
    with TestClient(_app(curation_ws.root)) as c:
        assert "secure" not in c.post("/api/session", json=token).headers["set-cookie"].lower()


def test_redact_hides_tokens_session_ids_and_bearer_credentials():
    line = 'GET /?map=a&token=crl_abcDEF123_-xyz HTTP/1.1 Authorization: Bearer crl_abcdefghijk cookie corral_session=crs_0123456789ab {"token": "crl_zzzzzzzzzz"}'
    clean = redact(line)
    assert "crl_abc" not in clean and "crs_0123" not in clean and "crl_zzz" not in clean
    assert "token=[redacted]" in clean and "Bearer [redacted]" in clean and "map=a" in clean
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", "/?token=crl_secret12345", "1.1", 303), None)
    assert RedactTokens().filter(record) and record.getMessage() == '127.0.0.1:5 - "GET /?token=[redacted] HTTP/1.1" 303'


def test_corral_serve_keeps_the_link_token_out_of_its_access_log(curation_ws, tmp_path):
    """The real command: open the single-user link, then read everything the server logged."""
    from corral.api.jobs import CLI_BOOT

    root = tmp_path / "solo"
    shutil.copytree(curation_ws.root, root, ignore=shutil.ignore_patterns("users.json"))
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", CLI_BOOT, "serve", "--workspace", str(root), "--port", str(port), "--no-warm-split"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        token = first["url"].split("token=", 1)[1]
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(first["url"], timeout=10) as r:  # follows the redirect
                    landed = r.url
                break
            except OSError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.2)
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    logged = [ln for ln in (out + err).splitlines() if "GET /" in ln]
    assert any("token=[redacted]" in ln for ln in logged), out + err  # the access log is on, and redacted
    leaks = [ln for ln in (out + err).splitlines() if token in ln and "single-user mode; open" not in ln]
    assert not leaks, leaks  # only the start-up line that hands the link to the user holds it
    assert landed == f"http://127.0.0.1:{port}/"


@pytest.mark.browser
def test_the_viewer_signs_in_with_the_link_and_out_again(browser, live_server, curation_ws):
    from tests.api.conftest import page_for, wait_ready

    token = curation_ws.tokens["curator"]
    with page_for(browser, f"{live_server.url}/?token={token}") as page:
        wait_ready(page)
        assert "token" not in page.url
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "corral_session"]
        assert cookie["value"].startswith("crs_") and cookie["httpOnly"] and token not in cookie["value"]
        assert page.evaluate("() => document.cookie") == ""
        status = page.evaluate("async () => (await fetch('/api/session', {method: 'DELETE'})).status")
        assert status == 200
        page.context.add_cookies([{"name": "corral_session", "value": cookie["value"], "url": live_server.url}])  # a kept copy
        page.reload()
        page.wait_for_selector("#signin[open]")  # signed out: the viewer asks for a token


@pytest.mark.browser
def test_the_sign_out_button_ends_the_session_and_shows_the_sign_in_box(browser, live_server, curation_ws):
    from tests.api.conftest import page_for, wait_ready

    with page_for(browser, f"{live_server.url}/?token={curation_ws.tokens['curator']}") as page:
        wait_ready(page)
        assert page.locator("#user").inner_text() == "curator (curator)"
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "corral_session"]
        assert "Shift+Q" in page.locator("#help-list").inner_text()
        page.keyboard.press("Shift+Q")  # the key asks first; cancelling keeps the session
        page.wait_for_selector("#signout-dialog[open]")
        page.click("#signout-cancel")
        assert page.evaluate("async () => (await fetch('/api/me')).status") == 200
        page.click("#sign-out")
        page.wait_for_selector("#signout-dialog[open]")
        with page.expect_navigation():
            page.click("#signout-here")
        page.wait_for_selector("#signin[open]")  # the page starts again and asks for a token
        assert page.locator("#user").inner_text() == "" and page.locator("#sign-out").is_hidden()
        assert not [c for c in page.context.cookies() if c["name"] == "corral_session"]  # the browser forgot it
        page.context.add_cookies([{"name": "corral_session", "value": cookie["value"], "url": live_server.url}])
        assert page.evaluate("async () => (await fetch('/api/me')).status") == 401  # a kept copy works no more
        page.click("#signin-token-box summary")  # and signing in again with a token works
        page.fill("#signin-token", curation_ws.tokens["viewer"])
        page.click("#signin-form button[type=submit]")
        page.wait_for_function("() => document.querySelector('#user').textContent === 'viewer (viewer)'")
        wait_ready(page)
        unexpected = [e for e in page.errors if "status of 401" not in e]  # the signed-out probes are 401s
        assert not unexpected, unexpected
