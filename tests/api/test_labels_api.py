"""Label actions through the API: durable events, exact undo, and every answer carrying the new state."""

from __future__ import annotations

import numpy as np

from corral.api.binpack import unpack
from corral.storage.labels import LabelStore
from corral.storage.workspace import Workspace


def _labels(client, auth):
    header, cols = unpack(client.get("/api/maps/main/labels.bin", headers=auth).content)
    names = {lab["id"]: lab["name"] for lab in header["labels"]}
    return header["version"], cols["label"].copy(), cols["state"].copy(), names


def _ids(client, auth, idx):
    return [p["id"] for p in client.post("/api/maps/main/points", headers=auth, json={"indices": list(idx)}).json()["points"]]


def test_assign_with_exclusions_is_one_durable_event(client, curation_ws):
    auth = curation_ws.auth("curator")
    sel = list(range(40, 60))
    res = client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": sel, "exclude": [41, 42], "label": "mug", "since": 0, "duration_ms": 1234})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["version"] == 1 and body["kind"] == "assign" and not body["full"]
    ch = body["changes"]
    assert sorted(ch["idx"]) == sel
    mug = next(lab["id"] for lab in body["labels"] if lab["name"] == "mug")
    got = dict(zip(ch["idx"], zip(ch["label"], ch["state"])))
    assert got[41] == (0, 1) and got[42] == (0, 1) and got[40] == (mug, 0)
    # durable: a fresh store (another process would see the same) has it
    store = LabelStore.open(Workspace(curation_ws.root))
    labels = store.item_labels()
    ids = _ids(client, auth, sel)
    assert sum(labels.get(i) == "mug" for i in ids) == 18
    ev = store.events()[-1]
    assert (ev.user, ev.kind, ev.duration_ms, ev.item_count) == ("curator", "assign", 1234, 20)
    store.close()
    # the packed labels agree with the answer
    version, lab, state, names = _labels(client, auth)
    assert version == 1 and names[mug] == "mug" and lab[40] == mug and state[41] == 1


def test_undo_redo_are_exact_and_per_user(client, curation_ws):
    a, b = curation_ws.auth("curator"), curation_ws.auth("curator2")
    client.post("/api/maps/main/actions/assign", headers=a, json={"indices": [1, 2, 3], "label": "cat"})
    client.post("/api/maps/main/actions/assign", headers=b, json={"indices": [7, 8], "label": "dog"})
    before = _labels(client, a)[1]
    r = client.post("/api/maps/main/actions/undo", headers=a, json={"since": 2}).json()
    assert r["kind"] == "undo" and sorted(r["changes"]["idx"]) == [1, 2, 3]
    _, lab, _, names = _labels(client, a)
    assert lab[1] == lab[2] == lab[3] == 0 and names[lab[7]] == "dog"  # b's action untouched
    r = client.post("/api/maps/main/actions/redo", headers=a, json={}).json()
    assert r["kind"] == "redo"
    assert np.array_equal(_labels(client, a)[1], before)
    nothing = client.post("/api/maps/main/actions/undo", headers=curation_ws.auth("admin"), json={})
    assert nothing.status_code == 400 and "nothing to undo" in nothing.json()["error"]


def test_rename_merge_delete(client, curation_ws):
    auth = curation_ws.auth("curator")
    client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": [1, 2], "label": "cup"})
    client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": [3], "label": "mug"})
    r = client.post("/api/maps/main/actions/rename", headers=auth, json={"old": "cup", "new": "teacup"}).json()
    teacup = next(lab for lab in r["labels"] if lab["name"] == "teacup")
    assert "cup" in teacup["aliases"]
    assert r["full"] is True  # no "since": the client is told to reload the whole label array
    r = client.post("/api/maps/main/actions/merge", headers=auth, json={"sources": ["mug"], "into": "teacup", "since": 3}).json()
    assert sorted(r["changes"]["idx"]) == [3] and r["changes"]["label"] == [teacup["id"]]
    assert [lab["name"] for lab in r["labels"]] == ["teacup"]
    r = client.post("/api/maps/main/actions/delete", headers=auth, json={"name": "teacup", "since": 4}).json()
    assert r["labels"] == [] and sorted(r["changes"]["idx"]) == [1, 2, 3] and set(r["changes"]["label"]) == {0}


def test_changes_since_cover_other_users(client, curation_ws):
    a, b = curation_ws.auth("curator"), curation_ws.auth("curator2")
    v0 = client.get("/api/maps/main/changes", headers=a, params={"since": 0}).json()
    etag = client.get("/api/maps/main", headers=a).json()["etag"]  # the view the point indices are of
    assert v0 == {"version": 0, "full": False, "etag": etag, "changes": {"idx": [], "label": [], "state": []}}
    client.post("/api/maps/main/actions/assign", headers=b, json={"indices": [5, 6], "label": "b-label"})
    # a's own action answers with b's change too, since a said it shows version 0
    r = client.post("/api/maps/main/actions/assign", headers=a, json={"indices": [9], "label": "a-label", "since": 0}).json()
    assert sorted(r["changes"]["idx"]) == [5, 6, 9]
    assert client.get("/api/maps/main/changes", headers=a, params={"since": 99}).json()["full"] is True


def test_writes_from_another_process_are_seen(client, curation_ws):
    auth = curation_ws.auth("viewer")
    client.get("/api/maps/main/labels.bin", headers=auth)  # the server has the arrays now
    ids = _ids(client, auth, [10, 11])
    store = LabelStore.open(Workspace(curation_ws.root))
    store.assign(ids, "from-cli", user="script")
    store.close()
    r = client.get("/api/maps/main/changes", headers=auth, params={"since": 0}).json()
    assert r["version"] == 1 and sorted(r["changes"]["idx"]) == [10, 11]
    assert any(lab["name"] == "from-cli" for lab in r["labels"])


def test_bad_input_is_a_short_4xx_and_writes_nothing(client, curation_ws):
    auth = curation_ws.auth("curator")
    cases = [
        ({"indices": [0], "label": ""}, 400, "empty"),
        ({"indices": [0], "label": "a\x00b"}, 400, "control character"),
        ({"indices": [curation_ws.n + 5], "label": "x"}, 400, "outside this map"),
        ({"indices": [], "label": "x"}, 400, "empty"),
        ({"indices": "zero", "label": "x"}, 422, "indices"),
        ({"label": "x"}, 422, "indices"),
    ]
    for body, status, words in cases:
        r = client.post("/api/maps/main/actions/assign", headers=auth, json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"] and "Traceback" not in r.text and len(r.text) < 600
    assert client.post("/api/maps/main/actions/rename", headers=auth, json={"old": "nope", "new": "x"}).status_code == 400
    assert client.get("/api/events", headers=auth).json()["events"] == []


def test_request_size_limit(client, curation_ws):
    big = {"indices": list(range(400_000)), "label": "x"}  # ~3 MB of JSON, over the 2 MB test limit
    r = client.post("/api/maps/main/actions/assign", headers=curation_ws.auth("curator"), json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_events_page_cuts_long_item_lists(client, curation_ws):
    auth = curation_ws.auth("curator")
    client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": list(range(100, 200)), "label": "many"})
    ev = client.get("/api/events", headers=auth, params={"since": 0}).json()["events"][0]
    assert len(ev["payload"]["items"]) == 20 and ev["payload"]["items_count"] == 100


def test_event_stream_announces_new_versions(client, curation_ws):
    auth = curation_ws.auth("curator")
    client.post("/api/maps/main/actions/assign", headers=auth, json={"indices": [1], "label": "x"})
    with client.stream("GET", "/api/events/stream", headers=auth, params={"since": 0, "timeout": 1, "interval": 0.1}) as r:
        text = "".join(r.iter_text())
    assert r.headers["content-type"].startswith("text/event-stream")
    assert 'event: version\ndata: {"version": 1}' in text
