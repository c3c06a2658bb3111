"""The API's try-it page (``/docs``) in real Chromium, with its Content-Security-Policy enforced:
Swagger UI comes from this server, renders every operation and calls the API, and the page asks no
other host for anything. Also: the browser tests' CSP watch catches a page that breaks its policy."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from corral.api.headers import CSP
from tests.api.conftest import browser_context

pytestmark = pytest.mark.browser


def test_the_docs_page_renders_from_this_server_under_its_policy(browser, live_server):
    doc = httpx.get(f"{live_server.url}/openapi.json").json()
    operations = sum(len(ops) for ops in doc["paths"].values())
    with browser_context(browser) as ctx:
        page = ctx.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        answer = page.goto(f"{live_server.url}/docs")
        assert answer is not None and answer.status == 200
        assert answer.headers["content-security-policy"] == CSP
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() == operations
        assert "Corral" in page.locator(".info .title").inner_text()

        # the page's requests reach the API too: try GET /api/health from it
        health = page.locator(".opblock-get", has=page.locator(".opblock-summary-path[data-path='/api/health']"))
        health.locator(".opblock-summary").click()
        health.get_by_role("button", name="Try it out").click()
        health.get_by_role("button", name="Execute").click()
        status = health.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=15_000)
        assert status.inner_text().strip() == "200"

    hosts = {urlsplit(u).hostname for u in asked if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, f"the page asked other hosts: {sorted(u for u in asked if urlsplit(u).hostname != '127.0.0.1')}"
    assert any(u.endswith(".js") or ".js?" in u for u in asked), "Swagger UI's script was not loaded from this server"


def test_the_csp_watch_fails_a_page_that_breaks_its_policy(browser, live_server):
    """An inline script on a page of this origin under the server's CSP is refused by the browser,
    and the watch every browser test runs under reports it."""
    url = f"{live_server.url}/a-page-with-an-inline-script"
    with pytest.raises(AssertionError, match="broke its Content-Security-Policy"):
        with browser_context(browser) as ctx:
            page = ctx.new_page()
            html = "<!doctype html><title>x</title><script>document.title = 'ran'</script>"
            page.route(url, lambda route: route.fulfill(status=200, body=html, headers={"content-type": "text/html", "content-security-policy": CSP}))
            page.goto(url)
            page.wait_for_function("() => document.readyState === 'complete'")
            assert page.title() == "x"  # the script did not run
