"""`corral labels import`: existing labels and ground truth from CSV, JSONL and Parquet."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corral.api.cli import main
from corral.storage.label_import import import_labels
from corral.storage.labels import LabelError, LabelStore
from tests.generated import generated_data
from tests.storage.factory import build_workspace, pick_images

#: rows of the generated set's manifest; the workspace holds 20 of them (4 objects x 5 poses)
ROWS = len(generated_data("manifest.csv").read_text().splitlines()) - 1


@pytest.fixture
def ws(tmp_path):
    images = pick_images(generated_data("images"), classes=4, per_class=5)
    return build_workspace(tmp_path / "ws", images, manifest_labels=True)


def run_cli(*args: str) -> tuple[int, dict | None]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["-q", *args])
    lines = buf.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if lines else None)


def labels_now(ws) -> dict[str, str]:
    with LabelStore.open(ws) as s:
        return s.item_labels()


def test_import_a_manifest_by_path(ws):
    """A folder-per-class set's manifest (relative paths) against a workspace holding 20 of its images."""
    assert ROWS == 288
    rep = import_labels(generated_data("manifest.csv"), workspace=ws, user="importer")
    assert (rep.rows, rep.imported, rep.unknown, rep.labels) == (ROWS, 20, ROWS - 20, 4)
    assert sorted(rep.labels_created) == ["obj01", "obj02", "obj03", "obj04"]
    assert len(rep.unknown_examples) == 10 and rep.unknown_examples[0].startswith("images/")
    items = ws.items().to_pylist()
    assert labels_now(ws) == {r["id"]: r["uri"].split("/")[-2] for r in items}
    with LabelStore.open(ws) as s:  # one event, undone in one step
        ev = s.events()[-1]
        assert (ev.kind, ev.user, ev.item_count) == ("import", "importer", 20)
        s.undo(user="importer")
        assert s.item_labels() == {} and s.labels() == []


def test_import_ids_from_jsonl_and_uris_from_parquet(ws, tmp_path):
    items = ws.items().to_pylist()
    lines = [{"id": r["id"], "label": "thing"} for r in items[:6]] + [{"id": "f" * 32, "label": "thing"}, {"id": items[6]["id"], "label": ""}]
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rep = import_labels(tmp_path / "l.jsonl", workspace=ws, user="u")
    assert (rep.imported, rep.unknown, rep.empty_label) == (6, 1, 1)
    assert rep.unknown_examples == ["f" * 32]
    pq.write_table(pa.table({"uri": [r["uri"] for r in items[4:10]], "label": ["Widget"] * 6}), tmp_path / "l.parquet")
    rep = import_labels(tmp_path / "l.parquet", workspace=ws, user="u", overwrite=False)
    assert rep.imported == 4 and rep.kept_existing == 2
    now = labels_now(ws)
    assert [now[r["id"]] for r in items[:10]] == ["thing"] * 6 + ["Widget"] * 4


def test_same_item_twice_the_last_row_wins_and_is_counted(ws, tmp_path):
    r = ws.items().to_pylist()[0]
    (tmp_path / "l.csv").write_text(f"uri,label\n{r['uri']},cat\n{r['uri']},dog\n")
    rep = import_labels(tmp_path / "l.csv", workspace=ws, user="u")
    assert rep.clashes == 1 and labels_now(ws) == {r["id"]: "dog"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,label\nx,cat\n", "needs a 'label' column and an 'id', 'uri' or 'path' column"),
        ("path,tag\nx,cat\n", "needs a 'label' column"),
        ("path,label\nimages/obj01/obj1__0.png,ok\nimages/obj01/obj1__1.png,bad\x01name\n", "U\\+0001"),
        ("path,label\nimages/obj01/obj1__0.png," + "x" * 10_000 + "\n", "10,000 characters"),
    ],
)
def test_a_bad_file_is_refused_and_nothing_is_written(ws, tmp_path, content, message):
    src = generated_data()  # relative paths in the file resolve against its own folder
    path = tmp_path / "copy" / "labels.csv"
    path.parent.mkdir()
    (tmp_path / "copy" / "images").symlink_to(src / "images")
    path.write_text(content)
    with pytest.raises(LabelError, match=message):
        import_labels(path, workspace=ws, user="u")
    with LabelStore.open(ws) as s:
        assert s.version() == 0


def test_strict_refuses_unknown_items(ws):
    with pytest.raises(LabelError, match=f"{ROWS - 20:,} row"):
        import_labels(generated_data("manifest.csv"), workspace=ws, user="u", strict=True)
    assert labels_now(ws) == {}


def test_cli_import_list_history_stats_undo_check(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_USER", "cli-user")
    rc, out = run_cli("labels", "import", "--from-workspace", "--workspace", str(ws.root))
    assert rc == 0 and out["imported"] == 20 and out["labels"] == 4
    rc, out = run_cli("labels", "import", str(generated_data("manifest.csv")), "--workspace", str(ws.root), "--keep-existing")
    assert rc == 0 and out["unknown"] == ROWS - 20 and out["imported"] == 20
    rc, out = run_cli("labels", "list", "--workspace", str(ws.root))
    assert rc == 0 and [(x["name"], x["count"]) for x in out["labels"]] == [("obj01", 5), ("obj02", 5), ("obj03", 5), ("obj04", 5)]
    rc, out = run_cli("labels", "history", "--workspace", str(ws.root))
    assert rc == 0 and [e["kind"] for e in out["events"]] == ["import", "import"] and out["events"][0]["user"] == "cli-user"
    rc, out = run_cli("labels", "stats", "--workspace", str(ws.root))
    assert rc == 0 and out["curators"][0]["actions"] == 2
    rc, out = run_cli("labels", "undo", "--workspace", str(ws.root))
    assert rc == 0 and out["kind"] == "undo"
    rc, out = run_cli("labels", "check", "--workspace", str(ws.root))
    assert rc == 0 and out["consistent"] is True
    rc, out = run_cli("labels", "import", str(tmp_path / "missing.csv"), "--workspace", str(ws.root))
    assert rc == 2 and out is None
