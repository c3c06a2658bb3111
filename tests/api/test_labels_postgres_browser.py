"""Two curators on two `corral serve` processes that share one PostgreSQL label store, each in
their own Chromium page: what one names appears on the other's screen without a reload, and an
undo there takes it away here."""

from __future__ import annotations

import pytest

from tests.api import pgservers
from tests.api.viewer_helpers import cluster_hull, label_counts, lasso, open_viewer, wait_ready

pytestmark = pytest.mark.browser

pg_labels, two_servers = pgservers.pg_labels, pgservers.two_servers  # the fixtures


def test_a_label_named_on_one_server_appears_on_the_other(browser, two_servers, curation_ws):
    a, b = two_servers
    with open_viewer(browser, a.base, curation_ws.tokens["curator"]) as page, open_viewer(browser, b.base, curation_ws.tokens["curator2"]) as other:
        wait_ready(page)
        wait_ready(other)
        size, hull = cluster_hull(page, 0)  # the first object's tight blob
        lasso(page, hull)
        page.wait_for_function("() => window.__corral.selectedCount() > 0")
        n_sel = page.evaluate("() => window.__corral.selectedCount()")
        page.locator("#name-input").fill("duck")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('.label-row[data-label=\"duck\"]')")
        assert label_counts(page)["duck"] == n_sel >= size
        # the curator on the other server sees it arrive without reloading
        other.wait_for_function("() => document.querySelector('.label-row[data-label=\"duck\"]')", timeout=20_000)
        assert label_counts(other)["duck"] == n_sel
        # the other curator renames it there; the first sees the new name here
        other.evaluate(
            """async () => { const r = await fetch('/api/maps/main/actions/rename', {method: 'POST', credentials: 'same-origin',
                 headers: {'Content-Type': 'application/json', 'X-Corral-Request': '1'}, body: JSON.stringify({old: 'duck', new: 'mallard'})});
                 if (!r.ok) throw new Error(await r.text()); }"""
        )
        page.wait_for_function("() => document.querySelector('.label-row[data-label=\"mallard\"]')", timeout=20_000)
        assert label_counts(page) == {"mallard": n_sel}
