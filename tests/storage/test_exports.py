"""Exports: items with label state (Parquet/CSV/JSONL), embeddings, COCO crops, ImageFolder."""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from corral.api.cli import main
from corral.storage.exports import ExportError, export, folder_name
from corral.storage.labels import LabelStore
from tests.generated import generated_data
from tests.storage.factory import build_workspace, crop_id, pick_images

CROPS = [(0, [10.0, 20.0, 40.0, 30.0]), (0, [60.0, 60.0, 50.0, 50.0]), (7, [0.0, 0.0, 64.0, 64.0]), (12, [5.0, 5.0, 20.0, 20.0])]


@pytest.fixture
def labelled(tmp_path):
    """18 COIL-20 images in 3 objects plus 4 crops, mostly labelled by two curators."""
    images = pick_images(generated_data("images"), classes=3, per_class=6)
    ws = build_workspace(tmp_path / "ws", images, crops=CROPS)
    items = ws.items().to_pylist()
    whole = [r for r in items if not r["parent_id"]]
    crops = [r for r in items if r["parent_id"]]
    with LabelStore.open(ws) as s:
        s.assign([r["id"] for r in whole[:6]], "duck", user="ana", exclude=[whole[5]["id"]], duration_ms=2000)
        s.assign([r["id"] for r in whole[6:12]], "cat/figure", user="bob", duration_ms=1000)
        s.assign([r["id"] for r in crops[:3]], "duck", user="ana")
        s.assign([crops[3]["id"]], "Car", user="bob")
        s.unlabel([crops[2]["id"]], user="ana")
    return ws, whole, crops


def run_cli(*args: str) -> tuple[int, dict | None]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["-q", *args])
    lines = buf.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None)


def test_parquet_export_has_every_item_with_its_state(labelled, tmp_path):
    ws, whole, crops = labelled
    res = export(ws, format="parquet", out=tmp_path / "labels.parquet")
    t = pq.read_table(tmp_path / "labels.parquet")  # pyarrow alone reads it
    assert t.column_names == ["id", "uri", "label", "excluded_from", "labelled_by", "labelled_at", "parent_id", "bbox", "labels"]
    assert res.rows == t.num_rows == len(whole) + len(crops) and res.labels == 3
    rows = {r["id"]: r for r in t.to_pylist()}
    assert rows[whole[0]["id"]]["label"] == "duck" and rows[whole[0]["id"]]["labelled_by"] == "ana"
    assert rows[whole[0]["id"]]["uri"] == whole[0]["uri"]
    assert rows[whole[5]["id"]]["label"] is None and rows[whole[5]["id"]]["excluded_from"] == ["duck"]
    assert rows[whole[7]["id"]]["label"] == "cat/figure"
    assert rows[whole[15]["id"]]["label"] is None and rows[whole[15]["id"]]["labelled_at"] is None
    assert rows[crops[3]["id"]]["label"] == "Car"
    assert str(t.schema.field("labelled_at").type) == "timestamp[ms, tz=UTC]"


def test_csv_and_jsonl_hold_the_same_rows(labelled, tmp_path):
    ws, whole, _ = labelled
    export(ws, format="parquet", out=tmp_path / "l.parquet")
    export(ws, format="csv", out=tmp_path / "l.csv")
    export(ws, format="jsonl", out=tmp_path / "l.jsonl")
    ref = pq.read_table(tmp_path / "l.parquet").to_pylist()
    with open(tmp_path / "l.csv", newline="", encoding="utf-8") as fh:
        rows_csv = list(csv.DictReader(fh))
    rows_jsonl = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(rows_csv) == len(rows_jsonl) == len(ref)
    for r, c, j in zip(ref, rows_csv, rows_jsonl):
        assert c["id"] == j["id"] == r["id"] and c["uri"] == j["uri"] == r["uri"]
        assert (c["label"] or None) == j["label"] == r["label"]
        assert j["excluded_from"] == r["excluded_from"] == (json.loads(c["excluded_from"]) if c["excluded_from"] else [])
        if r["labelled_at"] is not None:
            iso = r["labelled_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            assert c["labelled_at"] == j["labelled_at"] == iso


def test_embeddings_export_joins_vectors_and_labels(labelled, tmp_path):
    ws, whole, _ = labelled
    res = export(ws, format="embeddings", out=tmp_path / "emb.parquet")
    t = pq.read_table(tmp_path / "emb.parquet")
    ids, vecs = ws.default_embedding_set().load()
    assert res.rows == t.num_rows == len(ids)
    got = np.asarray(t.column("embedding").combine_chunks().values).reshape(t.num_rows, -1)
    assert np.array_equal(got, vecs) and t.column("id").to_pylist() == list(ids)
    labels = dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist()))
    assert labels[whole[0]["id"]] == "duck" and labels[whole[17]["id"]] is None
    meta = json.loads(t.schema.metadata[b"corral"])
    assert meta["model"] == "timm:test-model" and meta["dim"] == 32 and meta["labels_version"] == 5


def test_coco_export_puts_labelled_crops_on_their_parents(labelled, tmp_path):
    ws, whole, crops = labelled
    res = export(ws, format="coco", out=tmp_path / "coco.json")
    doc = json.loads((tmp_path / "coco.json").read_text())
    assert res.rows == len(doc["annotations"]) == 3 and res.skipped == {"unlabelled": 1}
    images = {im["id"]: im for im in doc["images"]}
    assert {im["corral_id"] for im in images.values()} == {whole[0]["id"], whole[7]["id"], whole[12]["id"]}
    assert all(im["width"] == 128 and im["height"] == 128 and Path(im["file_name"]).is_file() for im in images.values())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(cats.values()) == ["Car", "duck"]
    by_crop = {a["corral_id"]: a for a in doc["annotations"]}
    a = by_crop[crop_id(whole[0]["id"], CROPS[0][1])]
    assert a["bbox"] == CROPS[0][1] and a["area"] == 40.0 * 30.0 and cats[a["category_id"]] == "duck"
    assert images[a["image_id"]]["corral_id"] == whole[0]["id"]
    assert cats[by_crop[crops[3]["id"]]["category_id"]] == "Car"


def test_coco_without_crops_says_what_to_do(tmp_path):
    ws = build_workspace(tmp_path / "ws", pick_images(generated_data("images"), classes=1, per_class=3))
    with pytest.raises(ExportError, match="no crop items"):
        export(ws, format="coco", out=tmp_path / "coco.json")
    assert not (tmp_path / "coco.json").exists()


def test_imagefolder_copies_symlinks_and_crops(labelled, tmp_path):
    ws, whole, crops = labelled
    res = export(ws, format="imagefolder", out=tmp_path / "tree")
    tree = tmp_path / "tree"
    classes = json.loads((tree / "classes.json").read_text())
    assert {v["label"] for v in classes.values()} == {"duck", "cat/figure", "Car"}
    assert folder_name("cat/figure") == "cat_figure" and (tree / "cat_figure").is_dir()
    duck = sorted((tree / "duck").iterdir())
    assert len(duck) == 5 + 2  # five whole images (one was excluded) and two crops
    for r in whole[:5]:
        copy = tree / "duck" / Path(r["uri"]).name
        assert copy.read_bytes() == Path(r["uri"]).read_bytes() and not copy.is_symlink()
    crop_files = [p for p in duck if "-" in p.stem and p.suffix == ".png" and p.name not in {Path(r["uri"]).name for r in whole}]
    assert len(crop_files) == 2
    sizes = sorted(Image.open(p).size for p in crop_files)
    assert sizes == [(40, 30), (50, 50)]
    assert res.rows == 5 + 6 + 2 + 1
    export(ws, format="imagefolder", out=tmp_path / "links", mode="symlink")
    link = tmp_path / "links" / "cat_figure" / Path(whole[6]["uri"]).name
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(whole[6]["uri"])


def test_imagefolder_names_every_label_a_safe_unique_folder(labelled, tmp_path):
    """A label of 200 emoji (800 bytes, past the 255 a file name may hold) and one named like the
    index file beside the folders both export (issue 13, item 10)."""
    ws, whole, _ = labelled
    long_label = "\N{DOG FACE}" * 200
    with LabelStore.open(ws) as s:
        s.assign([r["id"] for r in whole[12:14]], long_label, user="ana")
        s.assign([r["id"] for r in whole[14:16]], "classes.json", user="ana")
    export(ws, format="imagefolder", out=tmp_path / "tree")
    tree = tmp_path / "tree"
    classes = json.loads((tree / "classes.json").read_text())
    by_label = {v["label"]: k for k, v in classes.items()}
    assert set(by_label) == {"duck", "cat/figure", "Car", long_label, "classes.json"}
    assert len(set(by_label.values())) == 5
    for label, folder in by_label.items():
        assert len(folder.encode()) <= 255 and (tree / folder).is_dir(), (label, folder)
    assert len(list((tree / by_label[long_label]).iterdir())) == 2 and len(list((tree / by_label["classes.json"]).iterdir())) == 2


def test_out_is_never_half_written_and_not_overwritten_by_accident(labelled, tmp_path):
    ws, _, _ = labelled
    out = tmp_path / "labels.csv"
    out.write_text("precious\n")
    with pytest.raises(ExportError, match="already exists"):
        export(ws, format="csv", out=out)
    assert out.read_text() == "precious\n"
    export(ws, format="csv", out=out, overwrite=True)
    assert out.read_text().startswith("id,uri,label")
    tree = tmp_path / "tree"
    export(ws, format="imagefolder", out=tree)
    with pytest.raises(ExportError, match="already exists"):
        export(ws, format="imagefolder", out=tree)
    export(ws, format="imagefolder", out=tree, overwrite=True, mode="symlink")
    assert sum(p.is_symlink() for p in (tree / "duck").iterdir()) == 5  # the two crops are cut, not linked
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers
    with pytest.raises(ExportError, match="part of the workspace"):
        export(ws, format="parquet", out=ws.embeddings_dir / "x.parquet")
    with pytest.raises(ExportError, match="format="):
        export(ws, format="xml", out=tmp_path / "x.xml")


def test_cli_export_and_curator_stats(labelled, tmp_path):
    ws, _, _ = labelled
    rc, out = run_cli("export", "--workspace", str(ws.root), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"))
    assert rc == 0 and out["rows"] == 22 and out["labels"] == 3 and out["format"] == "jsonl"
    rc, out = run_cli("export", "--workspace", str(ws.root), "--format", "curators", "--out", str(tmp_path / "cur.csv"))
    assert rc == 0 and out["rows"] == 2
    with open(tmp_path / "cur.csv", newline="") as fh:
        stats = {r["user"]: r for r in csv.DictReader(fh)}
    assert stats["ana"]["actions"] == "3" and stats["ana"]["seconds_per_action"] == "2.0"
    rc, out = run_cli("export", "--workspace", str(tmp_path / "missing"), "--format", "csv", "--out", str(tmp_path / "y.csv"))
    assert rc == 2 and out is None
