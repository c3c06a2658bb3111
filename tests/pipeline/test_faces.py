"""The face pipeline end to end on group photos made from real ORL faces.

Several people's faces are pasted onto each canvas at known places; ``corral embed --detector
face --model dlib:face-resnet`` must find the faces, cut and embed them so that on the map
(``corral map``) each person's crops form one cluster; named crops export as COCO boxes on their
parent images; and a new group photo of people already named comes back with their names at the
right boxes.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corral.api.cli import main
from corral.storage.labels import LabelStore
from corral.storage.workspace import Workspace
from tests.conftest import shared_data
from bench.groups import Face, compose, orl_photos
from corral.storage.boxes import iou

PEOPLE = 8  # identities in the default run
PHOTOS = range(0, 6)  # ORL photos 01-06 of each person go into the collection; 07-10 are unseen


def cli(*args: str) -> dict:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["-q", *args])
    assert rc == 0, buf.getvalue()
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def match(faces: list[Face], crops: list[dict], parents: dict[str, str]) -> dict[int, dict]:
    """Each ground-truth face -> the crop on its image overlapping it most (when IoU >= 0.5)."""
    out = {}
    for n, f in enumerate(faces):
        best, best_iou = None, 0.0
        for c in crops:
            if parents[c["parent_id"]] != f.image:
                continue
            v = iou(json.loads(c["bbox"]), f.box)
            if v > best_iou:
                best, best_iou = c, v
        if best is not None and best_iou >= 0.5:
            out[n] = best
    return out


def map_clusters(ws: Path, *options: str) -> dict[str, int]:
    """``corral map`` on the crops; item id -> cluster (-1 = noise)."""
    from corral.storage.maps import read_map

    summary = cli("map", "--workspace", str(ws), *options)
    assert summary["points"] > 0, summary
    points = read_map(ws).points
    return dict(zip(points.column("id").to_pylist(), points.column("cluster").to_pylist()))


#: Map settings for a small collection: each person has only 6 faces here, fewer than the
#: default min_samples of 10, and 48 points want fewer than 30 neighbours.
SMALL_MAP = ("--n-neighbors", "10", "--min-cluster-size", "3", "--min-samples", "3")


def ari_of(faces: list[Face], matched: dict[int, dict], crops: list[dict], cluster_of: dict[str, int]) -> float:
    """ARI of the clusters against identities over every crop (false detections are their own class;
    noise points are singletons, so leaving a face unclustered costs as much as misplacing it)."""
    from sklearn.metrics import adjusted_rand_score

    person = {c["id"]: faces[n].person for n, c in matched.items()}
    truth, pred = [], []
    for k, c in enumerate(crops):
        truth.append(person.get(c["id"], f"false-{k}"))
        cl = cluster_of[c["id"]]
        pred.append(f"c{cl}" if cl >= 0 else f"noise-{k}")
    return float(adjusted_rand_score(truth, pred))


def name_clusters(ws: Path, faces: list[Face], matched: dict[int, dict], cluster_of: dict[str, int]) -> dict[str, str]:
    """What a curator does: give each cluster the name of the person it shows (one action per cluster)."""
    person = {c["id"]: faces[n].person for n, c in matched.items()}
    members: dict[int, list[str]] = {}
    for cid, cl in cluster_of.items():
        if cl >= 0:
            members.setdefault(cl, []).append(cid)
    named = {}
    with LabelStore.open(ws) as store:
        store.register_items(list(cluster_of))
        for cl, ids in sorted(members.items()):
            votes = Counter(person.get(i) for i in ids if person.get(i))
            if not votes:
                continue
            name = votes.most_common(1)[0][0]
            keep = [i for i in ids if person.get(i) == name]
            store.assign(keep, name, user="curator", exclude=[i for i in ids if i not in keep])
            named.update({i: name for i in keep})
    return named


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    """12 group photos, 4 faces each, 8 people x 6 photos, embedded with the face pipeline."""
    root = tmp_path_factory.mktemp("faces")
    photos = orl_photos(shared_data("orl_faces", "images"), people=PEOPLE, photos=PHOTOS, seed=1)
    faces = compose(root / "photos", photos, per_image=4, seed=1)
    summary = cli("embed", str(root / "photos"), "--workspace", str(root / "ws"), "--detector", "face", "--model", "dlib:face-resnet", "--batch-size", "8")
    ws = Workspace(root / "ws")
    items = ws.items().to_pylist()
    parents = {r["id"]: Path(r["uri"]).name for r in items if not r["parent_id"]}
    crops = [r for r in items if r["parent_id"]]
    ids, vecs = ws.default_embedding_set().load()
    cluster_of = map_clusters(ws.root, *SMALL_MAP)
    return {"root": root, "ws": ws, "faces": faces, "summary": summary, "items": items, "parents": parents, "crops": crops, "ids": ids, "vecs": vecs, "clusters": cluster_of}


def test_faces_are_found_where_they_were_pasted(groups):
    faces, crops, summary = groups["faces"], groups["crops"], groups["summary"]
    det = summary["detection"]
    assert det["detector"] == "dlib:hog-face" and summary["model"] == "dlib:face-resnet" and summary["dim"] == 128
    assert summary["items"] == 12 and det["images"] == 12 and summary["embedded"] == det["crops"] == len(crops)
    matched = match(faces, crops, groups["parents"])
    recall = len(matched) / len(faces)
    assert recall >= 0.9, f"{len(matched)} of {len(faces)} faces found at IoU >= 0.5"
    # Few false detections on the backgrounds, and every crop is an item with its parent, box and detector.
    assert len(crops) <= len(faces) * 1.1
    for c in crops:
        meta = json.loads(c["meta"])
        assert c["status"] == "ok" and c["parent_id"] in groups["parents"]
        assert meta["detector"] == "dlib:hog-face" and isinstance(meta["score"], float)
        x, y, w, h = json.loads(c["bbox"])
        assert c["uri"].endswith(f"#xywh={x},{y},{w},{h}") and (c["width"], c["height"]) == (w, h)
    # Parents stay items (status ok) but only crops have vectors.
    assert set(groups["ids"].tolist()) == {c["id"] for c in crops}
    assert all(r["status"] == "ok" for r in groups["items"] if not r["parent_id"])


def test_same_person_crops_cluster_together(groups):
    faces, crops = groups["faces"], groups["crops"]
    matched = match(faces, crops, groups["parents"])
    norms = np.linalg.norm(groups["vecs"], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    assert set(groups["clusters"]) == {c["id"] for c in crops}  # the map is a map of crops
    ari = ari_of(faces, matched, crops, groups["clusters"])
    assert ari >= 0.8, ari


def test_coco_and_parquet_exports_hold_the_named_boxes(groups, tmp_path):
    from corral.storage.exports import export

    faces, crops, ws = groups["faces"], groups["crops"], groups["ws"]
    matched = match(faces, crops, groups["parents"])
    named = name_clusters(ws.root, faces, matched, groups["clusters"])
    assert len(named) >= 0.9 * len(faces)
    export(ws, format="coco", out=tmp_path / "faces.json")
    doc = json.loads((tmp_path / "faces.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    images = {im["id"]: Path(im["file_name"]).name for im in doc["images"]}
    assert sorted(cats.values()) == sorted({f.person for f in faces})
    assert len(doc["annotations"]) == len(named)
    right = 0
    for a in doc["annotations"]:
        on_image = [f for f in faces if f.image == images[a["image_id"]]]
        best = max(on_image, key=lambda f: iou(a["bbox"], f.box))
        right += iou(a["bbox"], best.box) >= 0.5 and best.person == cats[a["category_id"]]
        assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
    assert right == len(doc["annotations"])
    # The Parquet items export: crops carry parent_id and bbox; parents carry their crops' labels.
    export(ws, format="parquet", out=tmp_path / "items.parquet")
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "items.parquet").to_pylist()}
    for cid, name in named.items():
        crop = next(c for c in crops if c["id"] == cid)
        assert rows[cid]["parent_id"] == crop["parent_id"] and rows[cid]["bbox"] == [float(v) for v in json.loads(crop["bbox"])]
        assert rows[cid]["labels"] == [name]
    for pid, fname in groups["parents"].items():
        expected = sorted({named[c["id"]] for c in crops if c["parent_id"] == pid and c["id"] in named})
        assert rows[pid]["labels"] == expected and rows[pid]["parent_id"] is None and rows[pid]["bbox"] is None


def test_new_group_photo_comes_back_with_names_at_the_boxes(groups, tmp_path):
    from corral.pipeline.regions import RegionEncoder, recognize_regions
    from corral.storage.index_build import build_index
    from corral.storage.recognizer import Recognizer
    from corral.storage.index import LabelIndex

    ws, faces = groups["ws"], groups["faces"]
    with LabelStore.open(ws) as store:
        named_before = bool(store.item_labels())
    if not named_before:  # named by the export test when run together
        name_clusters(ws.root, faces, match(faces, groups["crops"], groups["parents"]), groups["clusters"])
    build_index(workspace=ws)
    recognizer = Recognizer(LabelIndex.load(ws.index_dir))
    # Unseen photos (ORL 08-10) of four people already named, on two new canvases.
    fresh = orl_photos(shared_data("orl_faces", "images"), people=PEOPLE, photos=range(7, 10), seed=7)[:8]
    new_faces = compose(tmp_path / "new", fresh, per_image=4, seed=7, prefix="new")
    enc = RegionEncoder(detector="face", model="dlib:face-resnet")
    results = recognize_regions(sorted((tmp_path / "new").glob("*.png")), recognizer=recognizer, encoder=enc)
    assert len(results) == 2 and all("error" not in r for r in results)
    hits = 0
    for f in new_faces:
        res = next(r for r in results if Path(r["input"]).name == f.image)
        best = max(res["regions"], key=lambda g: iou(g["bbox"], f.box), default=None)
        hits += best is not None and iou(best["bbox"], f.box) >= 0.5 and best["label"] == f.person
    assert hits >= 7, f"{hits} of {len(new_faces)} faces named at their boxes: {results}"

    # The same through the command line: the index remembers its crops' detector, so `corral
    # recognize` names every face in a photo without being told how the crops were cut.
    assert LabelIndex.load(ws.index_dir).meta.detection["detector"].endswith("face")
    out = cli("recognize", str(tmp_path / "new"), "--workspace", str(ws.root))
    assert out["detector"] and len(out["results"]) == 2
    by_box = {(Path(r["input"]).name, tuple(g["bbox"])): g["label"] for r in out["results"] for g in r["regions"]}
    got = {(r["input"], tuple(g["bbox"]), g["label"]) for r in results for g in r["regions"]}
    assert {(Path(i).name, b): label for i, b, label in got} == by_box  # the CLI answers what the library does
    whole = cli("recognize", str(tmp_path / "new"), "--workspace", str(ws.root), "--detector", "none")
    assert "detector" not in whole and all("regions" not in r for r in whole["results"])

    # And through the HTTP API: a crops index answers per box, the same boxes and names.
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.api.auth import UserStore
    from corral.api.settings import Settings

    token = UserStore(ws.root).add("svc", role="service")
    pngs = sorted((tmp_path / "new").glob("*.png"))
    with TestClient(create_app(Settings(workspace=ws.root))) as c:
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in pngs] + [("images", ("junk.png", b"not an image", "image/png"))]
        r = c.post("/api/recognize", files=files, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        answers = r.json()["results"]
        assert [a["status"] for a in answers] == [200, 200, 422]
        api_boxes = {(a["input"], tuple(g["bbox"])): g["label"] for a in answers[:2] for g in a["regions"]}
        assert api_boxes == by_box
        r = c.post("/api/recognize?regions=false", files=files[:1], headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "regions" not in r.json()["results"][0]


def test_whole_face_photos_embed_without_a_detector(tmp_path):
    """dlib:face-resnet on plain face photos (one face each): the nearest photo is the same person."""
    import shutil

    root = shared_data("orl_faces", "images")
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[20:25]:
        for f in sorted(folder.glob("*.png"))[:4]:
            (tmp_path / "src" / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp_path / "src" / folder.name / f.name)
    summary = cli("embed", str(tmp_path / "src"), "--workspace", str(tmp_path / "ws"), "--model", "dlib:face-resnet")
    assert summary["embedded"] == 20 and summary["dim"] == 128 and "detection" not in summary
    ws = Workspace(tmp_path / "ws")
    side = json.loads((ws.default_embedding_set().sidecar_path).read_text())
    assert side["weights_hash"] == "sha256:55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
    ids, vecs = ws.default_embedding_set().load()
    person = {r["id"]: Path(r["uri"]).parent.name for r in ws.items().to_pylist()}
    labels = np.array([person[i] for i in ids])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    assert float((labels[sims.argmax(1)] == labels).mean()) >= 0.95


@pytest.mark.slow
def test_forty_people_in_eighty_group_photos(tmp_path):
    """The bigger version: every ORL photo (40 people x 10), five to a canvas."""
    photos = orl_photos(shared_data("orl_faces", "images"), people=40, photos=range(10), seed=2)
    faces = compose(tmp_path / "photos", photos, per_image=5, size=(1100, 700), seed=2)
    summary = cli("embed", str(tmp_path / "photos"), "--workspace", str(tmp_path / "ws"), "--detector", "face", "--model", "dlib:face-resnet")
    ws = Workspace(tmp_path / "ws")
    items = ws.items().to_pylist()
    parents = {r["id"]: Path(r["uri"]).name for r in items if not r["parent_id"]}
    crops = [r for r in items if r["parent_id"]]
    matched = match(faces, crops, parents)
    assert summary["detection"]["images"] == 80 and len(matched) / len(faces) >= 0.9, (len(matched), summary)
    ari = ari_of(faces, matched, crops, map_clusters(ws.root, "--n-neighbors", "15", "--min-cluster-size", "5", "--min-samples", "5"))
    assert ari >= 0.8, ari
