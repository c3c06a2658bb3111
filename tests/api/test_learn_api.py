"""The learning loop over HTTP on a real map of real images (scikit-learn's digits, embedded and mapped)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.digits import by_class, digits_workspace


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from corral.api.auth import UserStore

    ws, truth = digits_workspace(tmp_path_factory.mktemp("learn"))
    users = UserStore(ws)
    tokens = {role: users.add(role, role=role) for role in ("curator", "viewer")}
    tokens["curator2"] = users.add("curator2", role="curator")
    return ws, truth, tokens


@pytest.fixture
def api(digits, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.settings import Settings

    ws, truth, tokens = digits
    fresh = tmp_path / "ws"
    shutil.copytree(ws, fresh, ignore=shutil.ignore_patterns("labels.sqlite*"))
    with TestClient(create_app(Settings(workspace=fresh))) as c:
        c.truth, c.tokens = truth, tokens
        c.hdr = lambda role="curator": {"Authorization": f"Bearer {tokens[role]}"}
        m = c.get("/api/maps", headers=c.hdr()).json()
        c.map = (m["maps"][0] if isinstance(m, dict) else m[0])["name"]
        yield c


def _ids(api) -> list[str]:
    """Item ids in the viewer's point order (the order the API's indices refer to)."""
    return api.app.state.ctx.maps.get(api.map).ids.to_pylist()


def _seed_labels(api, per_class: int = 8, classes: set[str] | None = None) -> list[str]:
    """Name a random sample of each digit (as a curator labelling a sample would), one action per digit."""
    import random

    ids = _ids(api)
    rng = random.Random(0)
    for c, idx in sorted(by_class(ids, api.truth).items()):
        if classes is not None and c not in classes:
            continue
        pick = rng.sample(idx, per_class)
        r = api.post(f"/api/maps/{api.map}/actions/assign", json={"indices": pick, "label": f"digit {c}"}, headers=api.hdr())
        assert r.status_code == 200, r.text
    return ids


def test_too_few_labels_says_what_it_needs(api):
    r = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr("viewer"))
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is False and "at least 2 labels" in body["reason"] and "labels so far: none" in body["reason"]
    # Even without a model the viewer knows what to offer next: the map's biggest unlabelled cluster.
    view = api.app.state.ctx.maps.get(api.map)
    first = body["next"][0]
    assert first["kind"] == "cluster" and sorted(first["indices"]) == sorted(int(i) for i in (view.cluster == first["cluster"]).nonzero()[0])
    sizes = [len(e["indices"]) for e in body["next"]]
    assert len(sizes) == len(set(view.cluster.tolist()) - {-1})


def test_suggested_group_is_accepted_in_one_action_and_the_model_retrains(api):
    ids = _seed_labels(api)
    r = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr("viewer"))
    assert r.status_code == 200, r.text
    rnd = r.json()
    assert rnd["ready"] and rnd["labelled"] == 80 and rnd["unlabelled"] == len(ids) - 80
    assert 0 < rnd["heldout_accuracy"] <= 1 and rnd["bar"] >= 0.97
    assert rnd["groups"], rnd
    g = rnd["groups"][0]
    assert g["confidence"] == sorted(g["confidence"])  # least sure first
    assert all(c >= rnd["bar"] for c in g["confidence"]) and [ids[i] for i in g["indices"]] == g["ids"]
    assert rnd["next"][0] == {"kind": "suggested", "label": g["label"], "indices": g["indices"]}
    # then more suggested groups, the unlabelled branches the regrouping found beside the named
    # items (kind "group"), and the map's clusters
    assert "suggested" in {e["kind"] for e in rnd["next"]} <= {"suggested", "group", "cluster"}
    # The suggestions are mostly right: the model claims its bar, the truth agrees.
    named = [(i, grp["label"].split()[-1]) for grp in rnd["groups"] for i in grp["ids"]]
    assert sum(api.truth[i] == c for i, c in named) / len(named) >= 0.95
    wrong = [k for k, i in zip(g["indices"], g["ids"]) if api.truth[i] != g["label"].split()[-1]]
    body = {"labels_version": rnd["labels_version"], "label": g["label"], "indices": g["indices"], "exclude": wrong}
    r = api.post(f"/api/maps/{api.map}/learn/accept", json=body, headers=api.hdr())
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["kind"] == "assign" and done["changed_items"] == len(g["indices"])  # named + excluded, one event
    # The next round learnt from it: more labelled items, a newer version.
    nxt = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    assert nxt["labels_version"] == done["version"] > rnd["labels_version"]
    assert nxt["labelled"] == 80 + len(g["indices"]) - len(wrong)
    assert all(i not in set(g["indices"]) - set(wrong) for grp in nxt["groups"] for i in grp["indices"])
    for e in nxt["hard"][:5]:
        assert ids[e["index"]] == e["id"] and e["label"].startswith("digit")


def test_classes_nobody_named_are_regrouped_and_not_suggested_as_known_ones(api):
    """Half the digits named: the loop's suggestions stay with the named digits, and the unnamed
    ones come back as regrouped groups (kind "group" in ``next``), each mostly one digit."""
    named = {"0", "1", "2", "3", "4"}
    ids = _seed_labels(api, per_class=12, classes=named)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr("viewer")).json()
    assert rnd["ready"], rnd
    rg = rnd["regrouped"]
    assert rg is not None and len(rg["groups"]) >= 3 and rg["items"] >= sum(len(g["indices"]) for g in rg["groups"]) and 0.0 <= rg["heldout_ari"] <= 1.0, rg
    suggested = [ids[i] for g in rnd["groups"] for i in g["indices"]]
    if suggested:
        assert sum(api.truth[i] not in named for i in suggested) / len(suggested) <= 0.05
    groups = [e for e in rnd["next"] if e["kind"] == "group" and "beside" not in e]
    assert groups and [e["kind"] for e in rnd["next"]].index("group") > max((k for k, e in enumerate(rnd["next"]) if e["kind"] == "suggested"), default=-1)
    # Unlabelled branches beside a named digit's items come after the groups among no labelled
    # item, and say which label they lie beside.
    kinds = [("beside" in e) for e in rnd["next"] if e["kind"] == "group"]
    assert kinds == sorted(kinds)
    assert all(e["beside"].split()[-1] in named for e in rnd["next"] if "beside" in e)
    new = [api.truth[ids[i]] for e in groups for i in e["indices"]]
    assert sum(c not in named for c in new) / len(new) >= 0.9
    purity = [Counter(api.truth[ids[i]] for i in e["indices"]).most_common(1)[0][1] / len(e["indices"]) for e in groups]
    assert sum(purity) / len(purity) >= 0.8, purity


def test_stale_round_is_refused_with_409(api):
    _seed_labels(api)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    g = rnd["groups"][0]
    # Another curator deletes the label in between: accepting the old round must not re-create it.
    r = api.post(f"/api/maps/{api.map}/actions/delete", json={"name": g["label"]}, headers=api.hdr("curator2"))
    assert r.status_code == 200, r.text
    body = {"labels_version": rnd["labels_version"], "label": g["label"], "indices": g["indices"]}
    r = api.post(f"/api/maps/{api.map}/learn/accept", json=body, headers=api.hdr())
    assert r.status_code == 409 and "fetch the new round" in r.json()["error"]
    labels = [lb["name"] for lb in api.get("/api/labels", headers=api.hdr()).json()["labels"]]
    assert g["label"] not in labels
    again = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    assert all(grp["label"] != g["label"] for grp in again["groups"])


def test_accept_refuses_bad_input_with_a_short_4xx(api):
    _seed_labels(api)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    url = f"/api/maps/{api.map}/learn/accept"
    v = rnd["labels_version"]
    assert api.post(url, json={"labels_version": v, "label": "x", "indices": []}, headers=api.hdr()).status_code == 400
    assert api.post(url, json={"labels_version": v, "label": "x", "indices": [10**9]}, headers=api.hdr()).status_code == 400
    assert api.post(url, json={"label": "x", "indices": [1]}, headers=api.hdr()).status_code in (400, 422)
    assert api.post(url, json={"labels_version": v, "label": "x", "indices": [1]}, headers=api.hdr("viewer")).status_code == 403
    assert api.get(f"/api/maps/{api.map}/learn?limit=0", headers=api.hdr()).status_code == 400
    assert api.get("/api/maps/nope/learn", headers=api.hdr()).status_code == 404


def test_review_page_names_the_matches_and_keeps_every_tiles_byproducts(api, tmp_path):
    from corral.storage.exports import export

    ids = _seed_labels(api)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    g = rnd["groups"][0]
    page = g["indices"][:48]
    digit = g["label"].split()[-1]
    tiles = []
    for k, i in enumerate(page):
        wrong = api.truth[ids[i]] != digit
        not_this = wrong or k == 0  # the curator also clicks one right tile away
        tiles.append(
            {
                "index": i,
                "row": k // 8,
                "col": k % 8,
                "order": k,
                "decision": "not" if not_this else "match",
                "shown_ms": 40.0 + k,
                "hovers": [[500.0 + 10 * k, 650.0 + 10 * k]],
                "clicks": [[600.0 + 10 * k, 12.5, 30.0]] if not_this else [],
                "decided_ms": 600.0 + 10 * k if not_this else 4000.0,
            }
        )
    body = {"page_id": "page-1", "label": g["label"], "labels_version": rnd["labels_version"], "shown_at": 1_790_000_000.0, "tiles": tiles}
    r = api.post(f"/api/maps/{api.map}/review", json=body, headers=api.hdr())
    assert r.status_code == 200, r.text
    out = r.json()
    n_not = sum(t["decision"] == "not" for t in tiles)
    assert out["kind"] == "assign" and out["review"] == {"page_id": "page-1", "tiles": len(tiles), "named": len(tiles) - n_not, "excluded": n_not, "left": 0}
    # Sent twice (a retry): refused, nothing labelled twice.
    again = api.post(f"/api/maps/{api.map}/review", json={**body, "labels_version": out["version"]}, headers=api.hdr())
    assert again.status_code == 409 and "recorded once" in again.json()["error"]
    # A page from older labels: refused.
    stale = api.post(f"/api/maps/{api.map}/review", json={**body, "page_id": "page-2"}, headers=api.hdr())
    assert stale.status_code == 409
    # Hostile input: a short 4xx, nothing stored.
    bad = {**body, "page_id": "page-3", "labels_version": out["version"], "tiles": [{**tiles[0], "decision": "maybe"}]}
    assert api.post(f"/api/maps/{api.map}/review", json=bad, headers=api.hdr()).status_code == 400
    dup = {**body, "page_id": "page-4", "labels_version": out["version"], "tiles": [tiles[0], tiles[0]]}
    assert api.post(f"/api/maps/{api.map}/review", json=dup, headers=api.hdr()).status_code == 400
    # The byproducts export: one row per tile with its place, hovers, clicks and time to decision.
    res = export(api.app.state.ctx.workspace, format="interactions", out=tmp_path / "tiles.csv")
    assert res.rows == len(tiles)
    import csv

    rows = list(csv.DictReader((tmp_path / "tiles.csv").open()))
    assert rows[0]["curator"] == "curator" and rows[0]["event_id"] == str(out["event_id"]) and rows[0]["decision"] == "not"
    assert {r["item_id"] for r in rows} == {ids[i] for i in page}
    assert float(rows[1]["hover_ms"]) == 150.0 and rows[1]["row"] == "0" and rows[1]["col"] == "1"


def test_a_cut_on_a_review_page_leaves_its_tiles_out_with_no_verdict(api):
    """Tiles a cut left out (decision "left") are neither named nor excluded: they stay unlabelled
    and are not remembered as "not this"; their traces are kept like any tile's. A page whose tiles
    were all left out names nothing and is refused with a short 4xx."""
    ids = _seed_labels(api)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    g = rnd["groups"][0]
    page = g["indices"][:12]
    digit = g["label"].split()[-1]

    def tile(k: int, i: int, decision: str) -> dict:
        return {"index": i, "row": k // 8, "col": k % 8, "order": k, "decision": decision, "decided_ms": 900.0 + k}

    cut = 3  # the first four tiles (the least sure) left out
    tiles = [tile(k, i, "left" if k <= cut else "not" if api.truth[ids[i]] != digit else "match") for k, i in enumerate(page)]
    body = {"page_id": "cut-1", "label": g["label"], "labels_version": rnd["labels_version"], "shown_at": 1_790_000_000.0, "tiles": tiles}
    everything_left = {**body, "page_id": "cut-0", "tiles": [{**t, "decision": "left"} for t in tiles]}
    r = api.post(f"/api/maps/{api.map}/review", json=everything_left, headers=api.hdr())
    assert r.status_code == 400 and "left out" in r.json()["error"]
    r = api.post(f"/api/maps/{api.map}/review", json=body, headers=api.hdr())
    assert r.status_code == 200, r.text
    n_not = sum(t["decision"] == "not" for t in tiles)
    assert r.json()["review"] == {"page_id": "cut-1", "tiles": len(tiles), "named": len(tiles) - cut - 1 - n_not, "excluded": n_not, "left": cut + 1}
    snap = api.app.state.ctx.labels.store.snapshot()
    for k, i in enumerate(page):
        state = snap.items.get(ids[i])
        if k <= cut:  # left out: unlabelled, and no "not this" stored
            assert state is None or state[0] is None, (k, state)
            assert g["label"] not in api.app.state.ctx.labels.store.exclusions().get(ids[i], set())
        elif tiles[k]["decision"] == "match":
            assert state[0] == g["label"]
    stored = api.app.state.ctx.extra["interactions"].rows(page_ids=["cut-1"])
    assert [r["decision"] for r in stored] == [t["decision"] for t in tiles]


def test_likely_pages_come_with_the_round_and_a_page_of_them_is_reviewed(api):
    """The round lists, per label, a review page of the model's likeliest items past the bar and the
    gate; a page of them is submitted like any review page (source "likely"), and an unknown source
    is a short 4xx."""
    ids = _seed_labels(api, per_class=4)
    rnd = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    assert rnd["ready"] and rnd["likely"], rnd.get("reason")
    suggested = {i for g in rnd["groups"] for i in g["indices"]}
    expected = [p["expected_right"] for p in rnd["likely"]]
    assert expected == sorted(expected, reverse=True)
    for p in rnd["likely"]:
        assert 3 <= len(p["indices"]) <= 48 and p["confidence"] == sorted(p["confidence"])  # least sure first
        assert [ids[i] for i in p["indices"]] == p["ids"] and not suggested & set(p["indices"])
        assert abs(sum(p["confidence"]) - p["expected_right"]) < 0.1 * len(p["indices"])
    page = rnd["likely"][0]
    digit = page["label"].split()[-1]
    tiles = [
        {"index": i, "row": k // 8, "col": k % 8, "order": k, "decision": "not" if api.truth[ids[i]] != digit else "match", "decided_ms": 900.0}
        for k, i in enumerate(page["indices"])
    ]
    body = {"page_id": "likely-1", "label": page["label"], "labels_version": rnd["labels_version"], "source": "likely", "shown_at": 1_790_000_000.0, "tiles": tiles}
    bad = api.post(f"/api/maps/{api.map}/review", json={**body, "page_id": "likely-0", "source": "hunch"}, headers=api.hdr())
    assert 400 <= bad.status_code < 500 and bad.status_code != 409, bad.text
    r = api.post(f"/api/maps/{api.map}/review", json=body, headers=api.hdr())
    assert r.status_code == 200, r.text
    n_not = sum(t["decision"] == "not" for t in tiles)
    assert r.json()["review"]["named"] == len(tiles) - n_not
    pages = api.app.state.ctx.extra["interactions"].pages()
    assert [(p["page_id"], p["source"]) for p in pages] == [("likely-1", "likely")]
    # the clicked tiles are "not" the label: the next round never offers them for it again
    nxt = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    clicked = {t["index"] for t in tiles if t["decision"] == "not"}
    assert not any(clicked & set(p["indices"]) for p in nxt["likely"] if p["label"] == page["label"])


def _until_current(api, *, tries: int = 600) -> dict:
    """Ask without waiting until the background round is current (at most ``tries`` x 0.1 s)."""
    import time

    for _ in range(tries):
        rnd = api.get(f"/api/maps/{api.map}/learn?wait=false", headers=api.hdr()).json()
        if not rnd.get("computing"):
            return rnd
        time.sleep(0.1)
    raise AssertionError("the background round never became current")


def test_without_waiting_the_next_proposals_come_at_once_and_the_round_follows(api):
    """After a naming, ``wait=false`` answers before the models have run: no suggested groups (they
    would be for older labels), the map's clusters as the next proposals; the round is computed in
    the background and the next ask gets it, the same as a waiting ask."""
    ids = _seed_labels(api)
    version = api.get("/api/labels", headers=api.hdr()).json()["version"]
    fast = api.get(f"/api/maps/{api.map}/learn?wait=false", headers=api.hdr()).json()
    assert fast["ready"] is False and fast["computing"] is True and fast["labels_version"] == version
    assert fast["next"] and all(e["kind"] == "cluster" for e in fast["next"])
    named = {k for k, i in enumerate(ids) if api.app.state.ctx.labels.store.item_labels().get(i)}
    assert named and not any(set(e["indices"]) & named for e in fast["next"])  # only unlabelled points are proposed
    rnd = _until_current(api)
    assert rnd["ready"] is True and rnd["labels_version"] == version
    waited = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    assert waited["labels_version"] == rnd["labels_version"] and waited["suggested"] == rnd["suggested"]
    assert [g["label"] for g in waited["groups"]] == [g["label"] for g in rnd["groups"]]
    # A new label makes it old again: at once, the groups the last round regrouped (still
    # unlabelled) come before the clusters, and no suggested group is offered for the old version.
    pick = [k for k, i in enumerate(ids) if api.truth[i] == "3"][:5]
    assert api.post(f"/api/maps/{api.map}/actions/assign", json={"indices": pick, "label": "digit 3"}, headers=api.hdr()).status_code == 200
    fast = api.get(f"/api/maps/{api.map}/learn?wait=false", headers=api.hdr()).json()
    assert fast["ready"] is False and fast["labels_version"] == version + 1
    kinds = [e["kind"] for e in fast["next"]]
    assert "suggested" not in kinds and kinds == sorted(kinds, key=lambda k: k != "group")
    assert _until_current(api)["labels_version"] == version + 1


def test_without_waiting_too_few_labels_says_so_once_learnt(api):
    """With too few labels the background round fails; the next ask says what is needed."""
    ids = _ids(api)
    pick = [k for k, i in enumerate(ids) if api.truth[i] == "1"][:5]
    assert api.post(f"/api/maps/{api.map}/actions/assign", json={"indices": pick, "label": "digit 1"}, headers=api.hdr()).status_code == 200
    rnd = _until_current(api)
    assert rnd["ready"] is False and "at least 2 labels" in rnd["reason"] and rnd["next"]


def test_a_pass_is_stored_with_who_and_when_and_every_curator_gets_it_last(api, tmp_path):
    """A proposal one curator passed over is stored (who, when, how) and comes after the others in
    every later round, for every curator of the map, in the order ``passed_last`` gives; a pass of
    a suggested group, an empty one, a stale map or a read-only user is refused with a short 4xx."""
    import time

    from corral.storage.interactions import InteractionStore

    _seed_labels(api)
    before = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr()).json()
    first = next(e for e in before["next"] if e["kind"] != "suggested")
    others = [e for e in before["next"] if e["kind"] != "suggested" and e is not first]
    assert others, [e["kind"] for e in before["next"]]
    t0 = time.time()
    body = {"indices": first["indices"], "how": "skip", "kind": first["kind"], "labels_version": before["labels_version"]}
    r = api.post(f"/api/maps/{api.map}/learn/pass", json=body, headers=api.hdr())
    assert r.status_code == 200, r.text
    assert r.json()["points"] == len(set(first["indices"]))
    # the other curator, and a viewer reading the map: the passed proposal now comes after the others
    for role in ("curator2", "viewer"):
        after = api.get(f"/api/maps/{api.map}/learn", headers=api.hdr(role)).json()
        keys = [(e["kind"], tuple(e["indices"])) for e in after["next"]]
        assert keys[-1] == (first["kind"], tuple(first["indices"])), keys[:3]
        assert sorted(keys) == sorted((e["kind"], tuple(e["indices"])) for e in before["next"])  # nothing dropped
    rows = InteractionStore.open(api.app.state.ctx.workspace).pass_rows()
    assert len(rows) == 1 and rows[0]["curator"] == "curator" and rows[0]["how"] == "skip" and rows[0]["map"] == api.map
    assert t0 - 1 <= rows[0]["at"] <= time.time() + 1 and rows[0]["labels_version"] == before["labels_version"]
    assert sorted(rows[0]["items"]) == sorted(_ids(api)[i] for i in first["indices"])
    # bad input: a short 4xx, nothing stored
    url = f"/api/maps/{api.map}/learn/pass"
    assert api.post(url, json={**body, "kind": "suggested"}, headers=api.hdr()).status_code == 422
    assert api.post(url, json={**body, "how": "maybe"}, headers=api.hdr()).status_code == 422
    assert api.post(url, json={**body, "indices": []}, headers=api.hdr()).status_code == 400
    assert api.post(url, json={**body, "indices": [10**9]}, headers=api.hdr()).status_code == 400
    assert api.post(url, json={**body, "etag": "stale"}, headers=api.hdr()).status_code == 409
    assert api.post(url, json=body, headers=api.hdr("viewer")).status_code == 403
    assert len(InteractionStore.open(api.app.state.ctx.workspace).pass_rows()) == 1
    # and exported, one row per pass (``corral export --format passes``)
    import csv
    import json

    from corral.storage.exports import export

    res = export(api.app.state.ctx.workspace, format="passes", out=tmp_path / "passes.csv")
    got = list(csv.DictReader(open(tmp_path / "passes.csv")))
    assert res.rows == 1 and got[0]["curator"] == "curator" and got[0]["how"] == "skip" and int(got[0]["item_count"]) == len(first["indices"])
    assert sorted(json.loads(got[0]["items"])) == sorted(rows[0]["items"])
