"""Every answer says ``nosniff``; every HTML page carries the Content-Security-Policy; the API's
try-it page (``/docs``) loads Swagger UI from this server, with no inline script and no other host."""

from __future__ import annotations

import re

from corral.api.headers import CSP


def test_every_page_carries_the_policy(client, curation_ws):
    for path in ("/", "/docs"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP.split("script-src")[1].split(";")[0]


def test_json_answers_and_errors_say_nosniff(client, curation_ws):
    answers = {
        "health": client.get("/api/health"),
        "401": client.get("/api/maps"),
        "404 route": client.get("/api/no-such-route"),
        "404 page": client.get("/no-such-page"),
        "405": client.put("/api/health"),
        # answered by the request guard before the app sees the request
        "401 body": client.post("/api/maps/main/actions/assign", content=b"{}", headers={"content-type": "application/json"}),
        "413": client.post("/api/maps/main/actions/assign", content=b" " * (3 * 1024 * 1024), headers={**curation_ws.auth("curator"), "content-type": "application/json"}),
        "openapi": client.get("/openapi.json"),
        "thumb": client.get(f"/api/items/{curation_ws.image_ids[0]}/thumb", headers=curation_ws.auth("viewer")),
    }
    for what, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", f"{what}: {r.status_code} {dict(r.headers)}"
        assert "content-security-policy" not in r.headers or r.headers["content-type"].startswith("text/html"), what
    assert answers["413"].status_code == 413 and answers["401 body"].status_code == 401


def test_the_docs_page_loads_swagger_ui_from_this_server(client):
    html = client.get("/docs").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/") or u.startswith("data:") for u in urls), urls
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script: the page's policy refuses it"
    scripts = [u for u in urls if ".js" in u]
    assert len(scripts) == 2  # Swagger UI's bundle and our start-up file
    for u in urls:
        if u.startswith("/"):
            r = client.get(u)
            assert r.status_code == 200 and len(r.content) > 100, u
            assert r.headers["content-type"].startswith("text/javascript" if ".js" in u else "text/css"), u
    init = client.get("/docs/init.js").text
    assert "SwaggerUIBundle(" in init and "validatorUrl: null" in init
    assert client.get("/docs/..%2Fpyproject.toml").status_code == 404
    assert client.get("/docs/index.html").status_code == 404  # only the files the page uses


def test_fastapis_cdn_page_is_not_served(client):
    html = client.get("/docs").text
    assert "cdn" not in html.lower() and "http" not in html
    assert client.get("/docs/oauth2-redirect").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_the_recognition_service_serves_the_same_page_policy_and_document(tmp_path):
    from fastapi.testclient import TestClient

    from corral.api.recognize_app import create_recognize_app
    from corral.storage.index_source import open_source

    app = create_recognize_app(open_source(tmp_path), device="cpu")
    client = TestClient(app)  # the index is never loaded: the page and the document need none
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert 'src="/docs/swagger-ui-bundle.js' in page.text and client.get("/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/health").headers["x-content-type-options"] == "nosniff"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"401", "413", "415"} <= set(paths["/api/recognize"]["post"]["responses"])
    assert "503" in paths["/api/health"]["get"]["responses"]
