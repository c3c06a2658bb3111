"""Box revisions through the API on a real group-photo set (ORL faces, dlib's HOG detector, dlib's
face ResNet): delete a false box, adjust one, draw a missed one; each an undoable event with who
and when; bad input answered 4xx; COCO and LabelMe exports import back."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest

from corral.storage.boxes import iou
from corral.api.cli import main
from tests.api.boxes_ws import copy_ws, group_set


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return group_set(tmp_path_factory.mktemp("groups"))


@pytest.fixture
def api(built, tmp_path):
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings

    root = copy_ws(built, tmp_path / "ws")
    users = UserStore(root)
    tokens = {n: users.add(n, role=r) for n, r in (("ana", "curator"), ("bob", "curator"), ("vic", "viewer"))}
    app = create_app(Settings(workspace=root))
    with TestClient(app) as c:
        c.root = root
        c.ctx = app.state.ctx
        c.hdr = {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
        yield c


def group0(c, who="ana"):
    ph = c.get("/api/photos", headers=c.hdr[who]).json()["photos"]
    return next(p for p in ph if p["name"] == "group_000.png")


def box_at(photo, target, least=0.5):
    best = max(photo["boxes"], key=lambda b: iou(b["bbox"], target))
    assert iou(best["bbox"], target) >= least, (photo["boxes"], target)
    return best


def on_map(c) -> set[str]:
    name = c.ctx.maps.names()[0]
    return set(c.ctx.maps.get(name).ids.to_pylist())


def cli(*args: str) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    lines = out.getvalue().strip().splitlines()
    return rc, json.loads(lines[-1]) if lines else {}, err.getvalue()


def test_delete_adjust_draw_each_undoable_with_history(api, built):
    c, ana = api, api.hdr["ana"]
    p = group0(c)
    assert len(p["boxes"]) == 4 and p["version"] == 0  # three people and the poster; the upside-down face is missed
    person, truth = built.people[1]
    loose = box_at(p, truth)
    poster = box_at(p, built.poster)
    assert c.post(f"/api/photos/{p['id']}/boxes/{loose['id']}/name", headers=ana, json={"label": person}).status_code == 200
    assert c.post(f"/api/photos/{p['id']}/boxes/{poster['id']}/name", headers=ana, json={"label": "poster"}).status_code == 200
    before_map = on_map(c)
    assert {loose["id"], poster["id"]} <= before_map

    # delete the false box: off the map, its label gone, the crop still an item (a negative)
    r = c.post(f"/api/photos/{p['id']}/boxes/{poster['id']}/delete", headers=ana, json={"base": 0})
    assert r.status_code == 200, r.text
    p1 = r.json()["photo"]
    assert poster["id"] not in {b["id"] for b in p1["boxes"]} and len(p1["boxes"]) == 3 and p1["version"] == r.json()["event_id"]
    assert poster["id"] not in on_map(c) and c.ctx.labels.store.item_labels().get(poster["id"]) is None
    listed = c.get("/api/maps", headers=ana).json()["maps"][0]
    assert listed["n"] == len(before_map) - 1 and listed["etag"] == c.get(f"/api/maps/{listed['name']}", headers=ana).json()["etag"]
    assert poster["id"] in c.ctx.extra["boxes"].state().deleted
    assert c.ctx.labels.store.exclusions().get(poster["id"]) == {"poster"}  # a negative of its label for the index

    # adjust a box to the true face: a new crop, embedded and placed, carrying the label
    tight = [round(v) for v in truth]
    r = c.post(f"/api/photos/{p['id']}/boxes/{loose['id']}/adjust", headers=ana, json={"base": p1["version"], "bbox": tight})
    assert r.status_code == 200, r.text
    new_id = r.json()["box"]
    p2 = r.json()["photo"]
    adjusted = next(b for b in p2["boxes"] if b["id"] == new_id)
    assert adjusted["bbox"] == tight and adjusted["label"] == person and adjusted["origin"] == "adjusted" and adjusted["replaces"] == loose["id"]
    now = on_map(c)
    assert new_id in now and loose["id"] not in now
    from corral.storage.index_build import read_vectors

    es = c.ctx.workspace.default_embedding_set()
    ids, vecs = read_vectors(es, {new_id, loose["id"]})
    assert set(ids) == {new_id, loose["id"]} and vecs.shape[1] == 128
    assert float(vecs[0] @ vecs[1]) > 0.9  # the same face, cut a little differently

    # draw the missed face and name it in the same step
    drawn = [round(v) for v in built.missed]
    r = c.post(f"/api/photos/{p['id']}/boxes", headers=ana, json={"base": p2["version"], "bbox": drawn, "label": built.missed_person})
    assert r.status_code == 200, r.text
    drawn_id = r.json()["box"]
    p3 = r.json()["photo"]
    assert {b["id"]: b["label"] for b in p3["boxes"]}[drawn_id] == built.missed_person and drawn_id in on_map(c)

    h = c.get(f"/api/photos/{p['id']}/history", headers=ana).json()["history"]
    assert [e["op"] for e in h] == ["draw", "adjust", "delete"] and all(e["user"] == "ana" and e["at"] > 0 and e["in_force"] for e in h)

    # undo each, newest first: the photo goes back step by step, and so does the map
    assert c.post("/api/photos/undo", headers=ana).status_code == 200
    back = c.get(f"/api/photos/{p['id']}", headers=ana).json()
    assert drawn_id not in {b["id"] for b in back["boxes"]} and drawn_id not in on_map(c)
    assert c.post("/api/photos/undo", headers=ana).status_code == 200
    back = c.get(f"/api/photos/{p['id']}", headers=ana).json()
    assert {b["id"]: b["label"] for b in back["boxes"]}.get(loose["id"]) == person and new_id not in on_map(c) and loose["id"] in on_map(c)
    assert c.post("/api/photos/undo", headers=ana).status_code == 200
    back = c.get(f"/api/photos/{p['id']}", headers=ana).json()
    assert {b["id"] for b in back["boxes"]} == {b["id"] for b in p["boxes"]} and on_map(c) == before_map
    assert c.ctx.labels.store.item_labels().get(poster["id"]) == "poster"
    assert poster["id"] not in c.ctx.labels.store.exclusions()
    h = c.get(f"/api/photos/{p['id']}/history", headers=ana).json()["history"]
    assert [e["op"] for e in h[:3]] == ["undo", "undo", "undo"] and not any(e.get("in_force") for e in h[3:])
    # redo brings the deletion back
    assert c.post("/api/photos/redo", headers=ana).status_code == 200
    assert poster["id"] not in {b["id"] for b in c.get(f"/api/photos/{p['id']}", headers=ana).json()["boxes"]}
    assert c.ctx.labels.store.check() == []


def test_bad_boxes_stale_views_and_unreadable_photos_get_4xx(api, built):
    c, ana, bob = api, api.hdr["ana"], api.hdr["bob"]
    p = group0(c)
    some = p["boxes"][0]
    url = f"/api/photos/{p['id']}/boxes"
    r = c.post(url, headers=ana, json={"bbox": [-300, 10, 100, 100]})
    assert r.status_code == 422 and "outside" in r.json()["error"]
    r = c.post(url, headers=ana, json={"bbox": [700, 400, 100, 100], "clip": False})
    assert r.status_code == 422 and "reaches past" in r.json()["error"]
    r = c.post(url, headers=ana, json={"bbox": [300, 300, 20, 60]})
    assert r.status_code == 422 and "--min-size 40" in r.json()["error"]
    r = c.post(url, headers=ana, json={"bbox": [300, 300, 120, "wide"]})
    assert r.status_code == 422
    r = c.post(url, headers=ana, json={"bbox": [1, 2, 3]})
    assert r.status_code == 422
    assert c.post(f"/api/photos/{'f' * 32}/boxes", headers=ana, json={"bbox": [0, 0, 50, 50]}).status_code == 404
    assert c.post(f"/api/photos/{p['id']}/boxes/{'e' * 32}/delete", headers=ana, json={}).status_code == 404
    assert c.post(f"/api/photos/{p['id']}/boxes/{some['id']}/delete", headers=api.hdr["vic"], json={}).status_code == 403
    assert c.get(f"/api/photos/{p['id']}", headers=api.hdr["vic"]).status_code == 200  # a viewer may look

    # a box reaching past the edge is cut to it (clip is the default)
    r = c.post(url, headers=ana, json={"bbox": [690, 380, 120, 120]})
    assert r.status_code == 200, r.text
    assert next(b for b in r.json()["photo"]["boxes"] if b["id"] == r.json()["box"])["bbox"] == [690, 380, 70, 80]
    seen = r.json()["photo"]["version"]

    # bob re-cuts a box meanwhile: ana's revision made on the older view is refused, nothing changes
    x, y, w, h = some["bbox"]
    assert c.post(f"/api/photos/{p['id']}/boxes/{some['id']}/adjust", headers=bob, json={"base": seen, "bbox": [x + 4, y + 4, w - 8, h - 8]}).status_code == 200
    other = next(b for b in p["boxes"] if b["id"] != some["id"])
    r = c.post(f"/api/photos/{p['id']}/boxes/{other['id']}/delete", headers=ana, json={"base": seen})
    assert r.status_code == 409 and "revised meanwhile" in r.json()["error"]
    assert other["id"] in {b["id"] for b in group0(c)["boxes"]}

    # a server without the set's model cannot embed a box: 503 saying so, nothing written
    es = c.ctx.workspace.default_embedding_set()
    side = json.loads(es.sidecar_path.read_text())
    es.sidecar_path.write_text(json.dumps(side | {"model": "timm:no_such_model_here"}))
    try:
        from corral.pipeline import boxcut

        boxcut._embedders.clear()
        now = group0(c)
        r = c.post(url, headers=ana, json={"base": now["version"], "bbox": [300, 300, 80, 80]})
        assert r.status_code == 503 and "cannot be embedded on this server" in r.json()["error"] and "no_such_model_here" in r.json()["error"]
        assert group0(c)["boxes"] == now["boxes"]
    finally:
        es.sidecar_path.write_text(json.dumps(side))
        boxcut._embedders.clear()

    # the photo moves away: its boxes stay, and a revision that needs its pixels says why it cannot
    photo_file = built.photos / "group_000.png"
    moved = c.root.parent / "moved.png"
    data = photo_file.read_bytes()
    photo_file.rename(moved)
    try:
        now = group0(c)
        r = c.post(url, headers=ana, json={"base": now["version"], "bbox": [300, 300, 80, 80]})
        assert r.status_code == 410 and "cannot be read now" in r.json()["error"] and "left as they are" in r.json()["error"]
        assert group0(c)["boxes"] == now["boxes"]
    finally:
        moved.rename(photo_file)
    assert photo_file.read_bytes() == data


def test_coco_and_labelme_exports_import_back_and_the_detector_report(api, built, tmp_path):
    c, ana = api, api.hdr["ana"]
    p = group0(c)
    poster = box_at(p, built.poster)
    r = c.post(f"/api/photos/{p['id']}/boxes/{poster['id']}/delete", headers=ana, json={})
    v = r.json()["photo"]["version"]
    r = c.post(f"/api/photos/{p['id']}/boxes", headers=ana, json={"base": v, "bbox": [round(x) for x in built.missed]})
    assert r.status_code == 200, r.text
    named = {}
    for ph in c.get("/api/photos", headers=ana).json()["photos"]:
        for k, b in enumerate(ph["boxes"]):
            if k % 2 == 0:  # half the boxes named
                name = f"person {ph['name'][:-4]} {k}"
                assert c.post(f"/api/photos/{ph['id']}/boxes/{b['id']}/name", headers=ana, json={"label": name}).status_code == 200
                named[b["id"]] = name
    unnamed = c.get("/api/photos?unnamed=true", headers=ana).json()
    assert unnamed["total"] == 4 and all(any(b["label"] is None for b in ph["boxes"]) for ph in unnamed["photos"])
    low = c.get("/api/photos?max_score=1.2", headers=ana).json()
    assert all(any(b["score"] is not None and b["score"] < 1.2 for b in ph["boxes"]) for ph in low["photos"])
    root = str(c.root)

    rc, coco, _ = cli("export", "-w", root, "--format", "coco", "--out", str(tmp_path / "boxes.json"))
    assert rc == 0 and coco["rows"] == len(named)
    doc = json.loads((tmp_path / "boxes.json").read_text())
    assert {a["corral_id"] for a in doc["annotations"]} == set(named) and poster["id"] not in {a["corral_id"] for a in doc["annotations"]}
    rc, lm, _ = cli("export", "-w", root, "--format", "labelme", "--out", str(tmp_path / "labelme"))
    files = sorted((tmp_path / "labelme").glob("*.json"))
    assert rc == 0 and len(files) == 4
    g0 = json.loads((tmp_path / "labelme" / "group_000.json").read_text())
    assert g0["imageWidth"] == 760 and len(g0["shapes"]) == 4 and all(s["shape_type"] == "rectangle" for s in g0["shapes"])
    assert any(iou([*s["points"][0], s["points"][1][0] - s["points"][0][0], s["points"][1][1] - s["points"][0][1]], built.missed) > 0.95 for s in g0["shapes"])

    # both come back: labels wiped by an undo-free unlabel, then imported from each file
    store = c.ctx.labels.store
    for source in (tmp_path / "boxes.json", tmp_path / "labelme"):
        store.unlabel(list(named), user="ana")
        assert not set(named) & set(store.item_labels())
        rc, rep, _ = cli("labels", "import", str(source), "-w", root)
        assert rc == 0 and rep["unknown"] == 0 and rep["imported"] == len(named), rep
        labels = store.item_labels()
        assert {i: labels.get(i) for i in named} == named

    # the detector against the revisions: on group_000 it found 4 boxes, 3 are right; 4 boxes now
    rc, rep, err = cli("detectors", "--report", "-w", root)
    (row,) = rep["detectors"]
    assert rc == 0 and row["detector"] == "dlib:hog-face" and row["photos_revised"] == 1
    assert (row["boxes_found"], row["boxes_now"], row["matched"]) == (4, 4, 3) and row["precision"] == row["recall"] == 0.75
    assert (c.root / "detectors-report.json").is_file() and "precision 0.750, recall 0.750" in err
    rc, _, err = cli("detectors", "--report")
    assert rc == 2 and "--workspace" in err


def test_a_box_gets_the_name_of_the_same_person_named_elsewhere(api, built):
    c, ana = api, api.hdr["ana"]
    photos = {p["name"]: p for p in c.get("/api/photos", headers=ana).json()["photos"]}
    for f in built.faces:  # the other photos' faces named after the person pasted there
        box = box_at(photos[f.image], f.box)
        assert c.post(f"/api/photos/{photos[f.image]['id']}/boxes/{box['id']}/name", headers=ana, json={"label": f.person}).status_code == 200
    g0 = photos["group_000.png"]
    for person, truth in built.people:  # each of them is also on another photo
        box = box_at(g0, truth)
        s = c.get(f"/api/photos/{g0['id']}/boxes/{box['id']}/suggest", headers=ana).json()["suggestion"]
        assert s["label"] == person and s["source"] == "nearest named box", (person, s)
    # the box drawn where the detector missed a face is offered a name at once
    r = c.post(f"/api/photos/{g0['id']}/boxes", headers=ana, json={"bbox": [round(v) for v in built.missed]})
    assert r.status_code == 200 and r.json()["suggestion"]["source"] == "nearest named box"
