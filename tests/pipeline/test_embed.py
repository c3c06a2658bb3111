"""The embed stage end to end: real pretrained model, real files, real S3 server, real kills."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corral.pipeline.embed import EmbedConfig, embed
from corral.pipeline.registry import UnknownName, check_name, create_embedder
from corral.pipeline.weights import WeightsNotFound
from corral.storage.workspace import Workspace
from tests.conftest import REPO, shared_data
from tests.generated import generated_data
from tests.pipeline.hostile import make_corpus

CFG = dict(progress=False, batch_size=16)


def _object_subset(dest: Path, per_class: int = 3, classes: int = 6) -> list[Path]:
    """A few generated object images (copied, so tests can grow or damage the folder)."""
    src = generated_data("images")
    out = []
    for cls in sorted(p for p in src.iterdir() if p.is_dir())[:classes]:
        for f in sorted(cls.iterdir())[:per_class]:
            (dest / cls.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / cls.name / f.name)
            out.append(dest / cls.name / f.name)
    return out


def _vectors(ws: Path) -> dict[str, np.ndarray]:
    ids, vecs = Workspace(ws).default_embedding_set().load()
    return {i: v for i, v in zip(ids, vecs)}


def test_hostile_corpus_never_stops_the_job(tmp_path):
    good, bad = make_corpus(tmp_path / "src")
    shutil.copy(tmp_path / "src" / "rgb.jpg", tmp_path / "src" / "rgb-copy.jpg")  # an exact duplicate
    res = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert res.items == len(good) + len(bad) + 1
    assert res.embedded == len(good)
    assert res.duplicates == 1
    expected = {}
    for reason in bad.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert res.skipped_by_reason == expected
    # Every skipped file is listed with its reason in the workspace.
    lines = (tmp_path / "ws" / "skipped.csv").read_text().splitlines()
    listed = {Path(line.split(",")[0]).name: line.split(",")[1] for line in lines[1:]}
    assert listed == bad
    items = Workspace(tmp_path / "ws").items().to_pylist()
    dup = [r for r in items if r["status"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["duplicate_of"].endswith(("rgb.jpg", "rgb-copy.jpg"))
    rotated = next(r for r in items if r["uri"].endswith("rotated.jpg"))
    assert (rotated["width"], rotated["height"]) == (40, 80)
    vecs = _vectors(tmp_path / "ws")
    assert len(vecs) == len(good)
    norms = np.linalg.norm(np.stack(list(vecs.values())), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)


def test_sidecar_and_shards_readable_without_corral(tmp_path):
    _object_subset(tmp_path / "src", per_class=2, classes=3)
    res = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(dtype="float16", **CFG))
    side = json.loads((Path(res.embeddings) / "embeddings.json").read_text())
    assert side["model"] == "timm:tf_efficientnet_lite0"
    assert side["weights_hash"].startswith("sha256:579344248a93e230")  # the packaged EfficientNet-Lite0 file
    assert side["dim"] == 1280 and side["dtype"] == "float16" and side["count"] == 6
    assert side["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    t = pq.read_table(Path(res.embeddings) / "part-00000.parquet")  # plain pyarrow, no Corral code
    typ = t.schema.field("embedding").type
    assert t.num_rows == 6 and typ.list_size == 1280 and str(typ.value_type) == "halffloat"


def test_kill_and_resume_gives_identical_output(tmp_path):
    _object_subset(tmp_path / "src", per_class=5, classes=8)  # 40 images, shards of 8
    args = [sys.executable, "-m", "corral", "-q", "embed", str(tmp_path / "src"), "--shard-size", "8", "--batch-size", "4", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Uninterrupted reference run.
    subprocess.run([*args, "--workspace", str(tmp_path / "ref")], check=True, env=env, capture_output=True, timeout=600)
    # Killed run: SIGKILL as soon as the second shard is complete, then resume.
    proc = subprocess.Popen([*args, "--workspace", str(tmp_path / "ws")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "ws" / "embeddings" / "tf_efficientnet_lite0" / "part-00001.items.parquet"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    es = Workspace(tmp_path / "ws").default_embedding_set()
    done_before = es.complete_shards()
    assert 2 <= len(done_before) < 5, f"kill landed after {done_before}"
    out = subprocess.run([*args, "--workspace", str(tmp_path / "ws")], check=True, env=env, capture_output=True, text=True, timeout=600)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["embedded"] == 40 - 8 * len(done_before)
    ref, got = _vectors(tmp_path / "ref"), _vectors(tmp_path / "ws")
    assert sorted(ref) == sorted(got)
    for k in ref:
        assert np.array_equal(ref[k], got[k]), "resumed vectors differ from the uninterrupted run"
    # Shard files match too, not just the vectors.
    ref_es = Workspace(tmp_path / "ref").default_embedding_set()
    assert ref_es.complete_shards() == es.complete_shards()


def test_rerun_on_grown_folder_embeds_only_new_items(tmp_path):
    files = _object_subset(tmp_path / "src", per_class=2, classes=4)
    first = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert first.embedded == len(files)
    again = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert again.embedded == 0 and again.already_done == len(files)
    _object_subset(tmp_path / "more", per_class=3, classes=5)
    shutil.copytree(tmp_path / "more", tmp_path / "src", dirs_exist_ok=True)
    grown = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    # 5 classes x 3 now, of which 4 x 2 were there before.
    assert grown.already_done == len(files)
    assert grown.embedded == 5 * 3 - len(files)
    assert len(_vectors(tmp_path / "ws")) == 15


def test_manifest_with_labels_and_metadata(tmp_path):
    files = _object_subset(tmp_path / "src", per_class=2, classes=2)
    man = tmp_path / "manifest.csv"
    rows = ["uri,label,photographer"] + [f"{f.relative_to(tmp_path)},{f.parent.name},ann" for f in files] + ["src/missing.png,ghost,bob"]
    man.write_text("\n".join(rows) + "\n")
    res = embed(str(man), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert res.embedded == 4 and res.skipped_by_reason == {"unreadable": 1}
    items = {Path(r["uri"]).name: r for r in Workspace(tmp_path / "ws").items().to_pylist()}
    some = items[files[0].name]
    assert some["label"] == files[0].parent.name and json.loads(some["meta"]) == {"photographer": "ann"}


def test_s3_prefix_against_a_real_server(tmp_path, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="photos")
    files = _object_subset(tmp_path / "src", per_class=2, classes=3)
    for f in files:
        s3.upload_file(str(f), "photos", f"set1/{f.parent.name}/{f.name}")
    s3.put_object(Bucket="photos", Key="set1/broken.jpg", Body=b"not an image at all")
    s3.put_object(Bucket="photos", Key="other/outside.png", Body=files[0].read_bytes())
    res = embed("s3://photos/set1", workspace=tmp_path / "ws", config=EmbedConfig(endpoint_url=s3_server, **CFG))
    assert res.items == 7 and res.embedded == 6 and res.skipped_by_reason == {"not_an_image": 1}
    uris = Workspace(tmp_path / "ws").items().column("uri").to_pylist()
    assert all(u.startswith("s3://photos/set1/") for u in uris)
    # The vectors equal those of the same files read from disk.
    local = embed(str(tmp_path / "src"), workspace=tmp_path / "ws-local", config=EmbedConfig(**CFG))
    assert local.embedded == 6
    a, b = _vectors(tmp_path / "ws"), _vectors(tmp_path / "ws-local")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-5)


def test_device_jpeg_decoder_matches_cpu_decoder(tmp_path):
    """The nvJPEG path (run here on the CPU) gives the same vectors as the PIL path, EXIF included."""
    from PIL import Image

    from tests.pipeline.hostile import jpeg_with_orientation

    src = tmp_path / "src"
    src.mkdir()
    for i, f in enumerate(_object_subset(tmp_path / "raw", per_class=1, classes=4)):
        img = Image.open(f).convert("RGB").resize((300, 220))
        (src / f"{i}.jpg").write_bytes(jpeg_with_orientation(img, 6 if i % 2 else 1))
    a = embed(str(src), workspace=tmp_path / "a", config=EmbedConfig(gpu_decode=False, **CFG))
    b = embed(str(src), workspace=tmp_path / "b", config=EmbedConfig(gpu_decode=True, **CFG))
    assert a.embedded == b.embedded == 4
    va, vb = _vectors(tmp_path / "a"), _vectors(tmp_path / "b")
    for k in va:
        assert float(va[k] @ vb[k]) > 0.97, "device decoder disagrees with the CPU decoder"
    wa = {r["id"]: (r["width"], r["height"]) for r in Workspace(tmp_path / "a").items().to_pylist()}
    wb = {r["id"]: (r["width"], r["height"]) for r in Workspace(tmp_path / "b").items().to_pylist()}
    assert wa == wb


def test_cli_summary_line(tmp_path):
    _object_subset(tmp_path / "src", per_class=1, classes=3)
    (tmp_path / "src" / "junk.jpg").write_bytes(b"")
    out = subprocess.run(
        [sys.executable, "-m", "corral", "embed", str(tmp_path / "src"), "--workspace", str(tmp_path / "ws")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) == {"items", "embedded", "duplicates", "skipped", "skipped_by_reason", "model", "dim", "seconds", "embeddings"}
    assert summary["items"] == 4 and summary["embedded"] == 3 and summary["skipped_by_reason"] == {"empty": 1}
    assert summary["dim"] == 1280 and Path(summary["embeddings"]).is_dir()
    assert "img/s" in out.stderr and "skipped 1 (empty 1)" in out.stderr


def test_names_and_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # resnet18's weights are not packaged: never ask a hub for them
    with pytest.raises(UnknownName, match="close matches: timm:resnet50"):
        check_name("timm:resnet5O")
    with pytest.raises(UnknownName, match="unknown embedder family"):
        check_name("tim:resnet50")
    with pytest.raises(WeightsNotFound, match="--weights PATH"):
        create_embedder("timm:resnet18")
    emb = create_embedder("timm:resnet18", allow_random=True)
    assert emb.weights_hash == "random" and emb.dim == 512
    # A weights file for another architecture is refused with the reason.
    from corral.pipeline.weights import PACKAGED, _package_file

    lite = _package_file("tf_efficientnet_lite0")
    assert lite is not None, PACKAGED
    with pytest.raises(WeightsNotFound, match="does not fit|tensors"):
        create_embedder("timm:resnet18", weights=str(lite))
    bad = embed
    with pytest.raises(ValueError, match="batch_size=0"):
        bad(str(tmp_path), workspace=tmp_path / "ws", config=EmbedConfig(batch_size=0))


def test_pretrained_neighbours_are_the_same_object(coil20_workspace):
    """COIL-20 with the packaged pretrained model: nearest neighbours share the object."""
    ws = Workspace(coil20_workspace)
    ids, vecs = ws.default_embedding_set().load()
    uri = {r["id"]: r["uri"] for r in ws.items().to_pylist()}
    labels = np.array([Path(uri[i]).parent.name for i in ids])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    acc = float((labels[sims.argmax(1)] == labels).mean())
    assert acc >= 0.95, acc


@pytest.mark.slow
def test_coil100_nearest_neighbour_is_same_object(tmp_path):
    """The issue's quality bar: >= 95% on the COIL-100 subset (raw pixels reach only 0.73)."""
    res = embed(str(shared_data("coil100_subset", "images")), workspace=tmp_path / "ws", config=EmbedConfig(progress=False))
    assert res.embedded == 1800
    ws = Workspace(tmp_path / "ws")
    ids, vecs = ws.default_embedding_set().load()
    uri = {r["id"]: r["uri"] for r in ws.items().to_pylist()}
    labels = np.array([Path(uri[i]).parent.name for i in ids])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    acc = float((labels[sims.argmax(1)] == labels).mean())
    assert acc >= 0.95, acc


def test_a_second_embed_run_waits_for_the_first_then_resumes(tmp_path, caplog):
    """While another run holds the workspace (issue 13, item 11), an embed run says who and waits
    instead of embedding everything a second time and sweeping the other's half-written shards; once
    the holder is gone it runs, and a later run skips what is done."""
    import fcntl
    import logging
    import threading

    files = _object_subset(tmp_path / "src", per_class=2, classes=3)
    ws = Workspace(tmp_path / "ws").ensure()
    lock = ws.root / ".embed.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 4242, "since": time.time()}).encode())
    done: dict = {}
    caplog.set_level(logging.WARNING, logger="corral.storage.wslock")
    t = threading.Thread(target=lambda: done.setdefault("res", embed(str(tmp_path / "src"), workspace=ws.root, config=EmbedConfig(**CFG))))
    t.start()
    deadline = time.time() + 60
    while "waiting" not in caplog.text and time.time() < deadline:
        time.sleep(0.1)
    assert "pid 4242" in caplog.text and "waiting" in caplog.text, caplog.text
    assert t.is_alive() and not list(ws.root.glob("embeddings/*/*.parquet"))  # nothing written while it waits
    os.close(fd)  # the holder ends
    t.join(timeout=120)
    assert not t.is_alive() and done["res"].embedded == len(files)
    again = embed(str(tmp_path / "src"), workspace=ws.root, config=EmbedConfig(**CFG))
    assert again.embedded == 0 and again.already_done == len(files)


def test_a_device_listed_as_an_image_is_refused_before_a_byte_is_read(tmp_path):
    """A file list naming /dev/zero (or a link to it) read 1 GiB per worker before the size check
    refused it (issue 13, item 9); a device is now refused from its mode, and a link to one inside
    a folder is left out as a link out of the folder."""
    import resource

    from corral.pipeline.ingest import read_bytes

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    os.symlink("/dev/zero", tmp_path / "zero.png")
    for uri in ("/dev/zero", str(tmp_path / "zero.png")):
        with pytest.raises(OSError, match=r"not a regular file \(a device\)"):
            read_bytes(uri)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024  # KiB: no 1 GiB read
    files = _object_subset(tmp_path / "src", per_class=1, classes=2)
    os.symlink("/dev/zero", tmp_path / "src" / "zero.png")
    res = embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert res.embedded == len(files)


def test_a_folder_of_links_out_says_so_instead_of_empty(tmp_path):
    """A class-per-folder view made with ``ln -s`` of images kept elsewhere: links out of a collection
    are not followed, so nothing is embedded, and the error says why and what to do instead of
    calling the folder empty. A manifest naming the same files embeds them."""
    from corral.pipeline.ingest import SourceError

    files = _object_subset(tmp_path / "store", per_class=1, classes=2)
    (tmp_path / "view" / "a").mkdir(parents=True)
    for i, f in enumerate(files):
        os.symlink(f, tmp_path / "view" / "a" / f"{i}-{f.name}")
    with pytest.raises(SourceError, match=r"all 2 file\(s\) are symbolic links pointing outside the folder.*manifest"):
        embed(str(tmp_path / "view"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))
    assert not (tmp_path / "ws" / "embeddings").exists() or not any((tmp_path / "ws" / "embeddings").rglob("*.parquet"))
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"{f}\n" for f in files))
    res = embed(str(tmp_path / "list.csv"), workspace=tmp_path / "ws2", config=EmbedConfig(**CFG))
    assert res.embedded == len(files)


def test_a_fifo_in_the_folder_is_skipped_with_a_reason_not_waited_on(tmp_path):
    """A named pipe among the images (issue 13, item 9) hung the job forever: reading it waits for a
    writer that never comes. It is skipped with its reason and the rest is embedded."""
    import threading

    files = _object_subset(tmp_path / "src", per_class=2, classes=2)
    os.mkfifo(tmp_path / "src" / "pipe.png")
    done: dict = {}
    t = threading.Thread(target=lambda: done.setdefault("res", embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(**CFG))), daemon=True)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "the embed run hung on the FIFO"
    res = done["res"]
    assert res.embedded == len(files) and sum(res.skipped_by_reason.values()) == 1, res.skipped_by_reason
    lines = (tmp_path / "ws" / "skipped.csv").read_text().splitlines()
    assert any(line.startswith(str(tmp_path / "src" / "pipe.png")) and "FIFO" in line for line in lines[1:]), lines
