"""The viewer's accounts, as a curator meets them: the sign-in page (name and password), a label
action, the history panel with undo from it, and signing out."""

from __future__ import annotations

import pytest

from corral.api.auth import UserStore
from tests.api.conftest import LiveServer, page_for, wait_ready
from tests.api.viewer_helpers import click_point

PASSWORD = "lasso and name it"


@pytest.mark.browser
def test_a_curator_signs_in_names_a_cluster_undoes_it_from_history_and_signs_out(browser, curation_ws):
    UserStore(curation_ws.root).add("ana", role="curator", password=PASSWORD, token=False)
    with LiveServer(curation_ws.root) as srv, page_for(browser, srv.url + "/") as page:
        page.wait_for_selector("#signin[open]")  # nobody is signed in: the sign-in page
        page.fill("#signin-name", "ana")
        page.fill("#signin-password", "not the password")
        page.click("#signin-go")
        page.wait_for_function("() => document.querySelector('#signin-error').textContent.includes('wrong name or password')")
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-go")
        wait_ready(page)
        assert page.locator("#user").inner_text() == "ana (curator)"
        assert page.locator("#users-button").is_hidden()  # a curator manages no users
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "corral_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and page.evaluate("() => document.cookie") == ""

        click_point(page, 0)  # the first object's cluster
        page.wait_for_function("() => window.__corral.selectedCount() > 0")
        named = page.evaluate("() => window.__corral.selectedCount()")
        page.locator("#name-input").fill("mug")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('.label-row[data-label=\"mug\"]')")

        # the next proposal is offered (and the name box focused for it): step out of the box first
        page.wait_for_function("() => document.querySelector('#next-line').textContent.includes('next:') && !window.__corral.proposal.following", timeout=60_000)
        page.keyboard.press("Escape")
        page.keyboard.press("h")  # the history panel
        entry = page.locator("#history-list li", has_text='assign "mug"')
        entry.wait_for()
        assert f"{named} items" in entry.inner_text() and "ok" in entry.locator(".outcome").inner_text()
        failed = page.locator("#history-list li", has_text="wrong name or password")  # her failed sign-in, too
        assert failed.count() == 1 and failed.locator(".outcome").inner_text() == "refused 401"
        assert page.locator("#history-list li.undone").count() == 0
        entry.locator(".history-undo").click()  # undo from the panel
        page.wait_for_function("() => !document.querySelector('.label-row[data-label=\"mug\"]')")
        page.wait_for_function("() => document.querySelector('#history-list li.undone')")
        texts = page.locator("#history-list li").all_inner_texts()
        assert any("undo of #" in t for t in texts), texts  # the undo is an entry of its own
        assert page.locator("#history-list li.undone").inner_text().count("mug") == 1

        page.click("#sign-out")
        page.wait_for_selector("#signout-dialog[open]")
        with page.expect_navigation():
            page.click("#signout-here")
        page.wait_for_selector("#signin[open]")  # signed out: the sign-in page again
        assert not [c for c in page.context.cookies() if c["name"] == "corral_session"]
        page.context.add_cookies([{"name": "corral_session", "value": cookie["value"], "url": srv.url}])
        assert page.evaluate("async () => (await fetch('/api/me')).status") == 401  # a kept copy works no more
        # the failed sign-in, the probes of a signed-out page and the next-proposal 404 are resource errors, not script errors
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []


@pytest.mark.browser
def test_an_admin_adds_a_user_changes_a_role_sets_a_password_and_removes_a_user_on_the_users_page(browser, curation_ws):
    """The users page as an admin meets it: each change is made from the page and takes effect at
    once (checked against the store and by signing in over HTTP with the new password)."""
    import json
    import urllib.error
    import urllib.request

    users = UserStore(curation_ws.root)
    users.add("root", role="admin", password=PASSWORD, token=False)
    users.add("ben", role="viewer", password="ben's first password", token=False)

    def sign_in(base: str, name: str, password: str) -> int:
        req = urllib.request.Request(base + "/api/signin", data=json.dumps({"name": name, "password": password}).encode(), method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def reloads(page, do) -> None:
        """Do ``do`` and wait until the page has drawn the users table again (its rows are new
        elements: a row filled in before that would be thrown away)."""
        row = page.locator("tr[data-user='ben']").element_handle()
        do()
        page.wait_for_function("(row) => !row.isConnected", arg=row)

    with LiveServer(curation_ws.root) as srv, page_for(browser, srv.url + "/") as page:
        page.wait_for_selector("#signin[open]")
        page.fill("#signin-name", "root")
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-go")
        wait_ready(page)
        page.click("#users-button")
        page.wait_for_selector("#users-dialog[open] tr[data-user='ben']")
        assert page.locator("tr[data-user='root'] select").is_disabled()  # an admin cannot demote themself here
        assert page.locator("tr[data-user='root'] button.remove").count() == 0

        # add: a short password is refused with the rule, a good one adds her as a curator
        page.fill("#users-add-name", "cleo")
        page.fill("#users-add-password", "short")
        page.click("#users-add button[type=submit]")
        page.wait_for_function("() => document.querySelector('#users-message').className.includes('error')")
        assert "8" in page.locator("#users-message").inner_text()
        page.fill("#users-add-password", "cleo's own password")
        reloads(page, lambda: page.click("#users-add button[type=submit]"))
        page.wait_for_selector("tr[data-user='cleo']")
        assert "cleo added" in page.locator("#users-message").inner_text()
        assert UserStore(curation_ws.root).get("cleo").role == "curator"
        assert sign_in(srv.url, "cleo", "cleo's own password") == 200

        # change a role
        reloads(page, lambda: page.select_option("tr[data-user='ben'] select", "curator"))
        page.wait_for_function("() => document.querySelector('#users-message').textContent.includes('ben is now curator')")
        assert UserStore(curation_ws.root).get("ben").role == "curator"

        # set a new password: the old one stops working, the new one works
        page.fill("tr[data-user='ben'] input[type=password]", "ben's second password")
        reloads(page, lambda: page.click("tr[data-user='ben'] button.set-password"))
        page.wait_for_function("() => document.querySelector('#users-message').textContent.includes('ben has a new password')")
        assert sign_in(srv.url, "ben", "ben's second password") == 200
        assert sign_in(srv.url, "ben", "ben's first password") == 401  # (a failure starts a back-off: last)

        # remove, after a confirmation (cancel first: nothing happens)
        page.click("tr[data-user='cleo'] button.remove")
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-cancel")
        assert page.locator("tr[data-user='cleo']").count() == 1
        page.click("tr[data-user='cleo'] button.remove")
        page.wait_for_selector("#confirm[open]")
        reloads(page, lambda: page.click("#confirm-ok"))
        page.wait_for_function("() => !document.querySelector(\"tr[data-user='cleo']\")")
        assert UserStore(curation_ws.root).get("cleo") is None
        assert sign_in(srv.url, "cleo", "cleo's own password") == 401
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []
