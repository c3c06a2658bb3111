"""Box revisions in the label store, on each backend, without a model: the boxes now derived from
the crops plus the revisions in force, undo and redo of each, the checks on a curator's box, the
COCO and LabelMe round trip and the detector report. The crops are boxes on real image files
(tests/generated.py) recorded as the detect stage records them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corral.pipeline.boxcut import write_box
from corral.storage.boxes import KIND, BoxError, box_state, check_box, detector_report, revision_payload
from corral.storage.exports import export
from corral.storage.label_import import import_labels
from corral.storage.labels import LabelStore
from tests.generated import generated_data
from tests.storage.factory import build_workspace, pick_images

#: two photos (parents 0 and 1 of the picked images, 128 x 128): three boxes on the first, one on the second
CROPS = [(0, [10.0, 10.0, 50.0, 50.0]), (0, [70.0, 20.0, 40.0, 40.0]), (0, [20.0, 70.0, 45.0, 45.0]), (1, [30.0, 30.0, 60.0, 60.0])]


@pytest.fixture
def boxed(tmp_path, new_location):
    ws = build_workspace(tmp_path / "ws", pick_images(generated_data("images"), classes=1, per_class=3), crops=CROPS)
    store = LabelStore(new_location())
    store.register_items(ws.items().column("id").to_pylist())
    yield ws, store
    store.close()


def photos_now(ws, store):
    return box_state(ws.items(), store.in_force(KIND)).photos


def curator_box(ws, photo, bbox, origin, replaces=None) -> str:
    """A crop a curator cut, written as the viewer's revisions write it (the vector is a seeded unit vector)."""
    es = ws.default_embedding_set()
    v = np.random.default_rng(len(bbox) + int(bbox[0])).standard_normal(32).astype(np.float32)
    return write_box(es, parent={"id": photo.id, "uri": photo.uri}, bbox=tuple(int(b) for b in bbox), vector=v / np.linalg.norm(v), origin=origin, replaces=replaces)


def test_revisions_derive_the_boxes_and_undo_exactly(boxed):
    ws, store = boxed
    (first, second) = sorted(photos_now(ws, store).values(), key=lambda p: -len(p.boxes))
    assert len(first.boxes) == 3 and len(second.boxes) == 1 and first.version == 0
    false_box, loose, kept = sorted(first.boxes.values(), key=lambda b: b.bbox)
    store.assign([loose.id, false_box.id], "ana's face", user="ana")

    r1 = store.revise(KIND, revision_payload("delete", first.id, remove=[false_box.id]), user="ana", relabel={false_box.id: None}, exclude={false_box.id: "ana's face"})
    assert store.exclusions() == {false_box.id: {"ana's face"}}
    new_id = curator_box(ws, first, (65, 15, 50, 50), "adjusted", loose.id)
    payload = revision_payload("adjust", first.id, remove=[loose.id], add=[{"id": new_id, "bbox": [65, 15, 50, 50], "from": loose.id}])
    store.revise(KIND, payload, user="bob", new_items=[new_id], relabel={new_id: "ana's face", loose.id: None})
    drawn = curator_box(ws, second, (0, 0, 40, 40), "drawn")
    store.revise(KIND, revision_payload("draw", second.id, add=[{"id": drawn, "bbox": [0, 0, 40, 40], "from": None}]), user="ana", new_items=[drawn])

    state = box_state(ws.items(), store.in_force(KIND))
    p1, p2 = state.photos[first.id], state.photos[second.id]
    assert set(p1.boxes) == {kept.id, new_id} and p1.boxes[new_id].origin == "adjusted" and p1.boxes[new_id].bbox == (65, 15, 50, 50)
    assert set(p2.boxes) == {*second.boxes, drawn} and p2.boxes[drawn].detector == "curator"
    assert state.hidden() == {false_box.id, loose.id} and set(state.deleted) == {false_box.id}
    assert p1.version == r1.event_id + 1 and p1.revisions == 2
    labels = store.item_labels()
    assert labels.get(new_id) == "ana's face" and loose.id not in labels and false_box.id not in labels
    events = store.events()
    assert [(e.kind, e.user, e.payload.get("op")) for e in events[-3:]] == [(KIND, "ana", "delete"), (KIND, "bob", "adjust"), (KIND, "ana", "draw")]

    store.undo(user="ana")  # ana's newest: the drawn box
    assert drawn not in photos_now(ws, store)[second.id].boxes and drawn in box_state(ws.items(), store.in_force(KIND)).hidden()
    store.undo(user="bob")  # the adjustment: the old box and its label come back
    now = photos_now(ws, store)[first.id]
    assert loose.id in now.boxes and new_id not in now.boxes and store.item_labels().get(loose.id) == "ana's face"
    store.undo(user="ana")
    assert set(photos_now(ws, store)[first.id].boxes) == {false_box.id, loose.id, kept.id}
    assert store.item_labels().get(false_box.id) == "ana's face"
    assert store.exclusions() == {}
    store.redo(user="ana")
    assert false_box.id not in photos_now(ws, store)[first.id].boxes
    assert store.check() == []


def test_a_curators_box_is_clipped_or_refused_with_the_reason():
    assert check_box([-10, 5, 60, 60], width=100, height=80, min_size=40) == (0, 5, 50, 60)
    assert check_box([10.4, 5.6, 50, 50.2], width=100, height=80, min_size=40) == (10, 5, 51, 51)
    with pytest.raises(BoxError, match="reaches past the 100 x 80 photo"):
        check_box([-10, 5, 60, 60], width=100, height=80, min_size=40, clip=False)
    with pytest.raises(BoxError, match="outside the 100 x 80 photo"):
        check_box([120, 5, 60, 60], width=100, height=80, min_size=40)
    with pytest.raises(BoxError, match="smaller than --min-size 40"):
        check_box([70, 5, 60, 60], width=100, height=80, min_size=40)  # 30 px wide once clipped
    for bad in ([1, 2, 3], [1, 2, float("nan"), 4], [1, 2, -5, 4], "wide", None):
        with pytest.raises(BoxError):
            check_box(bad, width=100, height=80, min_size=1)


def test_coco_and_labelme_round_trip_and_the_detector_report(boxed, tmp_path):
    ws, store = boxed
    (first, second) = sorted(photos_now(ws, store).values(), key=lambda p: -len(p.boxes))
    false_box, loose, kept = sorted(first.boxes.values(), key=lambda b: b.bbox)
    store.revise(KIND, revision_payload("delete", first.id, remove=[false_box.id]), user="ana")
    drawn = curator_box(ws, first, (5, 60, 48, 48), "drawn")
    store.revise(KIND, revision_payload("draw", first.id, add=[{"id": drawn, "bbox": [5, 60, 48, 48], "from": None}]), user="ana", new_items=[drawn])
    names = {loose.id: "duck", kept.id: "cat", drawn: "duck"}
    for i, n in names.items():
        store.assign([i], n, user="ana")

    res = export(ws, format="coco", out=tmp_path / "boxes.json", store=store)
    doc = json.loads((tmp_path / "boxes.json").read_text())
    assert res.rows == 3 and res.skipped == {"unlabelled": 1}  # the second photo's box is unnamed
    assert {a["corral_id"]: a["corral_origin"] for a in doc["annotations"]} == {loose.id: "detector", kept.id: "detector", drawn: "drawn"}
    assert {im["corral_id"] for im in doc["images"]} == {first.id, second.id}
    res = export(ws, format="labelme", out=tmp_path / "labelme", store=store)
    files = {f.name: json.loads(f.read_text()) for f in (tmp_path / "labelme").glob("*.json")}
    assert res.rows == 4 and len(files) == 2
    shapes = [s for d in files.values() for s in d["shapes"]]
    assert sorted(s["label"] for s in shapes) == ["", "cat", "duck", "duck"] and all(s["shape_type"] == "rectangle" for s in shapes)
    assert next(s for s in shapes if s["corral_id"] == drawn)["points"] == [[5, 60], [53, 108]]

    for source in (tmp_path / "boxes.json", tmp_path / "labelme"):
        store.unlabel(list(names), user="ana")
        rep = import_labels(source, workspace=ws, user="ana", store=store)
        assert rep.imported == 3 and rep.unknown == 0 and {i: store.item_labels().get(i) for i in names} == names

    # annotations found again by position when their ids are gone (a LabelMe file edited by hand)
    store.unlabel(list(names), user="ana")
    edited = next(f for f in (tmp_path / "labelme").glob("*.json") if json.loads(f.read_text())["corral_id"] == first.id)
    d = json.loads(edited.read_text())
    for s in d["shapes"]:
        s.pop("corral_id")
        s["points"] = [[p[0] + 2, p[1] + 1] for p in s["points"]]
    d["shapes"].append({"label": "ghost", "points": [[90, 90], [127, 127]], "shape_type": "rectangle"})
    edited.write_text(json.dumps(d))
    rep = import_labels(edited, workspace=ws, user="ana", store=store)
    assert rep.imported == 3 and rep.unknown == 1 and "box [90, 90, 37, 37]" in rep.unknown_examples[0]

    (row,) = detector_report(box_state(ws.items(), store.in_force(KIND)))
    # only the revised photo counts: the detector found 3 there, 2 stand, and 3 boxes are there now
    assert (row["photos_revised"], row["boxes_found"], row["boxes_now"], row["matched"]) == (1, 3, 3, 2)
    assert row["precision"] == row["recall"] == round(2 / 3, 4)
