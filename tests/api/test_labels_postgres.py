"""Several `corral serve` processes on one PostgreSQL label store, as a team runs them.

The workspace's SQLite store is moved with `corral labels migrate`, two servers start with
`--labels postgresql://...` (the session's own PostgreSQL server, socket-only), and then: an action
acknowledged by one server reaches the other's event stream by the database's push alone, and a
curator's Chromium page on one server shows what a curator on the other names; a stale map version
is 409 on either; a server killed with SIGKILL mid-load, again and again, loses no
acknowledged action; and a bad or unreachable ``--labels`` is one clear line.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException

import pytest

from corral.storage.labels import LabelStore
from tests.api.conftest import free_port
from tests.api import pgservers
from tests.api.pgservers import Server, cli, http
from tests.api.viewer_helpers import cluster_hull, label_counts, lasso, open_viewer, wait_ready

team = pgservers.team  # the fixture: a workspace on PostgreSQL and two servers on it


def etag(server: Server, token: str) -> str:
    status, maps = http("GET", f"{server.base}/api/maps", token)
    assert status == 200
    return next(m["etag"] for m in maps["maps"] if m["name"] == "main")


def test_an_action_on_one_server_is_pushed_to_the_other(team):
    a, b = team.servers
    token = team.ws.tokens["curator"]
    status, ch = http("GET", f"{b.base}/api/maps/main/changes?since=0", token)  # B's viewer has the map open
    assert status == 200
    v0 = ch["version"]
    # B's stream polls only every 10 s and closes after 3: a version message before it closes can
    # only come from the database's push (NOTIFY) of A's commit
    got: list[str] = []
    url = f"{b.base}/api/events/stream?since={v0}&timeout=3&interval=10"
    ready = threading.Event()

    def listen() -> None:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            ready.set()
            for line in r:
                got.append(line.decode())
                if line.startswith(b"data: "):
                    return  # the push arrived: no need to wait for the stream to close

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(30)
    time.sleep(0.5)  # the stream has read the version it starts from
    status, res = http("POST", f"{a.base}/api/maps/main/actions/assign", token, {"indices": list(range(5)), "label": "teapot", "since": v0, "etag": etag(a, token)})
    assert status == 200, res
    t.join(timeout=60)
    versions = [json.loads(x[len("data: ") :])["version"] for x in got if x.startswith("data: ")]
    assert res["event_id"] in versions, got
    # B serves the points A changed, and its labels
    status, ch = http("GET", f"{b.base}/api/maps/main/changes?since={v0}", token)
    assert status == 200 and ch["version"] == res["event_id"] and sorted(ch["changes"]["idx"]) == list(range(5))
    assert "teapot" in {lab["name"] for lab in ch["labels"]}
    # a stale map version is refused on either server, as with one
    for s in (a, b):
        status, body = http("POST", f"{s.base}/api/maps/main/actions/assign", token, {"indices": [7], "label": "teapot", "etag": "stale"})
        assert status == 409 and "rebuilt" in body["error"]
    # undo is per user across servers: B undoes what A did
    status, res = http("POST", f"{b.base}/api/maps/main/actions/undo", token, {"since": ch["version"]})
    assert status == 200 and sorted(res["changes"]["idx"]) == list(range(5))


@pytest.mark.browser
def test_a_label_named_on_one_server_appears_on_the_other(browser, team):
    a, b = team.servers
    with open_viewer(browser, a.base, team.ws.tokens["curator"]) as page, open_viewer(browser, b.base, team.ws.tokens["curator2"]) as other:
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
        counts = label_counts(page)
        assert counts["mallard"] == n_sel and "duck" not in counts


def _load(servers: list[Server], tokens: list[str], e: str, acks: list[dict], stop: threading.Event, seed: int) -> None:
    """One curator: random assigns and undos on a random live server until ``stop``; records each
    acknowledged answer (a refused or cut-off request is not acknowledged)."""
    rng = random.Random(seed)
    token = tokens[seed % len(tokens)]
    while not stop.is_set():
        s = rng.choice(servers)
        try:
            if rng.random() < 0.8:
                idx = rng.sample(range(48), rng.randint(1, 6))
                status, res = http("POST", f"{s.base}/api/maps/main/actions/assign", token, {"indices": idx, "label": rng.choice(["mug", "cup", "jar"]), "etag": e}, timeout=20)
            else:
                status, res = http("POST", f"{s.base}/api/maps/main/actions/undo", token, {}, timeout=20)
        except (OSError, HTTPException, ValueError):
            continue  # the server was killed under this request (refused, reset, or the answer cut off): not acknowledged
        if status == 200:
            acks.append({"event_id": res["event_id"], "kind": res["kind"]})


def kill_servers(team: pgservers.Team, *, kills: int) -> dict:
    two_servers = team.servers
    a = two_servers[0]
    tokens = [team.ws.tokens["curator"], team.ws.tokens["curator2"]]
    e = etag(a, tokens[0])
    acks: list[dict] = []
    stop = threading.Event()
    pool = [threading.Thread(target=_load, args=(two_servers, tokens, e, acks, stop, k)) for k in range(4)]
    for t in pool:
        t.start()
    rng = random.Random(1)
    try:
        for k in range(kills):
            victim = two_servers[k % 2]
            time.sleep(rng.uniform(0.5, 1.5))  # mid-load
            victim.kill()
            time.sleep(rng.uniform(0.2, 0.8))  # the other server carries on alone
            victim.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in pool:
            t.join(timeout=60)
    with LabelStore(a.labels) as store:
        assert store.check() == []
        events = {ev.id: ev for ev in store.events(limit=100_000)}
    lost = [x for x in acks if x["event_id"] not in events or events[x["event_id"]].kind != x["kind"]]
    assert not lost, f"{len(lost)} acknowledged actions lost, e.g. {lost[:3]}"
    assert len({x["event_id"] for x in acks}) == len(acks)  # no two acknowledgements for one event
    return {"acknowledged": len(acks), "events": len(events), "kills": kills, "lost": len(lost)}


def test_servers_killed_mid_load_lose_no_acknowledged_action(team):
    figures = kill_servers(team, kills=2)
    print("two servers, kills:", json.dumps(figures))
    assert figures["acknowledged"] > 0 and figures["lost"] == 0


@pytest.mark.slow
def test_servers_killed_many_times(team):
    figures = kill_servers(team, kills=12)
    print("two servers, kills (slow):", json.dumps(figures))
    assert figures["lost"] == 0


def test_a_bad_or_unreachable_label_store_is_one_line(team, tmp_path):
    ws = str(team.ws.root)
    p = cli("labels", "list", "--workspace", ws, "--labels", "mysql://db/labels")
    assert p.returncode == 2 and "mysql: is not a label store kind" in p.stderr and "postgresql://" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    down = f"postgresql://corral:secret@/labels?host={tmp_path}"  # no server listens on that socket
    p = cli("serve", "--workspace", ws, "--labels", down, "--port", str(free_port()))
    assert p.returncode != 0 and "cannot reach the label store" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr and "secret" not in p.stderr
    p = cli("export", "--workspace", ws, "--format", "csv", "--out", str(tmp_path / "x.csv"), "--labels", "postgresql://")
    assert p.returncode == 2 and "name the database" in p.stderr
