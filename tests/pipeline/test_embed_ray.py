"""The embed stage on a Ray cluster (a one-machine cluster started here) against the local engine,
plus the streaming listing and shard reader both engines share."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from corral.pipeline.embed import EmbedConfig, embed
from corral.pipeline.ingest import SourceItem, list_source, stream_source
from corral.pipeline.listing import Listing
from corral.pipeline.shards import ShardReader
from corral.storage.workspace import Workspace
from tests.conftest import REPO
from tests.generated import generated_data
from tests.pipeline.hostile import make_corpus

# Small shards so a run has many: a kill lands mid-run, and resuming has something to skip.
CFG = dict(progress=False, batch_size=4, shard_size=3, num_workers=0)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The hostile corpus, a few generated photos, and copies of one image both inside a shard
    and shards apart (so de-duplication across shards is exercised)."""
    src = tmp_path_factory.mktemp("ray") / "src"
    make_corpus(src)
    gen = generated_data("images")
    for cls in sorted(p for p in gen.iterdir() if p.is_dir())[:2]:
        for f in sorted(cls.iterdir())[:3]:
            (src / cls.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, src / cls.name / f.name)
    shutil.copy(src / "rgb.jpg", src / "rgb-copy.jpg")  # beside it: the same shard
    shutil.copy(src / "rgb.jpg", src / "zz-last-copy.jpg")  # the last shard
    return src


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """The local engine's run: what every Ray run must end with."""
    ws = tmp_path_factory.mktemp("ref") / "ws"
    res = embed(str(source), workspace=ws, config=EmbedConfig(**CFG))
    return res, _output(ws)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'corral[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _output(ws: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Vectors by id, and each uri's row (status, reason, duplicate_of, size) from the items files."""
    w = Workspace(ws)
    ids, vecs = w.default_embedding_set().load()
    rows = {r["uri"]: (r["id"], r["status"], r["reason"], r["duplicate_of"], r["width"], r["height"]) for r in w.items().to_pylist()}
    return dict(zip(ids, vecs)), rows


def _same(got: tuple, want: tuple) -> None:
    (gv, gr), (wv, wr) = got, want
    assert gr == wr
    assert sorted(gv) == sorted(wv)
    worst = max(float(np.abs(gv[k] - wv[k]).max()) for k in wv)
    assert worst <= 1e-5, worst


def test_ray_engine_writes_what_the_local_engine_writes(cluster, source, reference, tmp_path):
    want_res, want = reference
    # A decode worker per actor, kept from shard to shard (the kill and resume tests decode in the actor).
    res = embed(str(source), workspace=tmp_path / "ws", config=EmbedConfig(engine="ray", ray_actors=2, **{**CFG, "num_workers": 1}))
    _same(_output(tmp_path / "ws"), want)
    for key in ("items", "embedded", "duplicates", "skipped", "skipped_by_reason"):
        assert getattr(res, key) == getattr(want_res, key), key
    assert want_res.duplicates == 2 and want_res.skipped_by_reason  # the corpus does test both
    assert Workspace(tmp_path / "ws").default_embedding_set().complete_shards() == list(range(-(-want_res.items // 3)))
    assert (tmp_path / "ws" / "skipped.csv").read_text().count("\n") == want_res.skipped + 1
    deadline = time.monotonic() + 30
    while cluster.util.list_named_actors() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cluster.util.list_named_actors(), "the run left actors behind"


def test_a_killed_actor_s_shard_is_embedded_again_not_lost_or_doubled(cluster, source, reference, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="corral.pipeline.embed_ray")
    box: dict = {}
    cfg = EmbedConfig(engine="ray", ray_actors=2, **{**CFG, "shard_size": 1})  # one item a shard: the run lasts, the kill lands inside it
    run = threading.Thread(target=lambda: box.setdefault("res", embed(str(source), workspace=tmp_path / "ws", config=cfg)))
    run.start()
    # Kill the second actor as soon as the run is under way (the set's sidecar is written once the
    # first actor has described its model; the second may still be loading, or embedding a shard).
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        names = sorted(cluster.util.list_named_actors())
        if len(names) >= 2 and list((tmp_path / "ws").glob("embeddings/*/embeddings.json")):
            killed = names[-1]
            cluster.kill(cluster.get_actor(killed))
        time.sleep(0.02)
    run.join(timeout=300)
    assert killed and not run.is_alive()
    assert "actor died during shard" in caplog.text, "the kill landed after the last shard"
    _same(_output(tmp_path / "ws"), reference[1])
    assert box["res"].embedded == reference[0].embedded


def test_a_rerun_after_the_run_was_killed_skips_finished_shards(cluster, source, reference, tmp_path):
    """The command line joins the cluster (--ray-address), is SIGKILLed after two shards, and a
    second run embeds only the rest."""
    address = cluster.get_runtime_context().gcs_address
    args = [sys.executable, "-m", "corral", "-q", "embed", str(source), "--workspace", str(tmp_path / "ws"), "--engine", "ray", "--ray-address", address, "--ray-actors", "1"]
    args += ["--shard-size", "3", "--batch-size", "4", "--workers", "0"]
    proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = tmp_path / "ws" / "embeddings" / "tf_efficientnet_lite0" / "part-00001.items.parquet"
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    done = Workspace(tmp_path / "ws").default_embedding_set().complete_shards()
    assert 2 <= len(done) < -(-reference[0].items // 3), (done, err.decode()[-2000:])
    # The killed driver's actors go with it; the rerun's own then have the CPUs.
    deadline = time.monotonic() + 60
    while cluster.util.list_named_actors(all_namespaces=True) and time.monotonic() < deadline:
        time.sleep(0.2)
    res = embed(str(source), workspace=tmp_path / "ws", config=EmbedConfig(engine="ray", ray_actors=2, **CFG))
    assert res.already_done == 3 * len(done)
    assert res.embedded + res.duplicates + res.skipped == reference[0].items - 3 * len(done)
    _same(_output(tmp_path / "ws"), reference[1])


def test_listing_spills_sorted_runs_and_merges_them_in_uri_order(tmp_path):
    rng = np.random.default_rng(0)
    uris = [f"/d/{rng.integers(0, 50)}/{i % 7}-{rng.integers(0, 10**6)}.jpg" for i in range(200)]
    items = [SourceItem(u, i, label=str(i % 3), meta={"n": i}) for i, u in enumerate(uris)]
    spilled = Listing(items, chunk=16, spill_dir=tmp_path)
    assert spilled.spilled == 13 and len(spilled) == 200
    want = sorted(items, key=lambda it: it.uri)  # stable: equal uris keep their order
    for _ in range(2):  # read twice: counting, then handing out shards
        got = list(spilled)
        assert [(g.uri, g.size, g.label, g.meta) for g in got] == [(w.uri, w.size, w.label, w.meta) for w in want]
    spilled.close()
    assert not list(tmp_path.iterdir())


def test_stream_source_lists_as_list_source_does(tmp_path):
    for i in range(30):
        (tmp_path / "src" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / f"d{i % 4}" / f"{i}.jpg").write_bytes(b"x" * i)
    (tmp_path / "src" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("uri,label\n" + "".join(f"src/d{i % 4}/{i}.jpg,c{i}\n" for i in reversed(range(30))))
    for src in (tmp_path / "src", tmp_path / "m.csv"):
        assert list(stream_source(src)) == list_source(src)
    assert all(it.label == "c" + Path(it.uri).stem for it in stream_source(tmp_path / "m.csv"))


def test_reader_cuts_what_is_left_into_numbered_shards():
    items = [SourceItem(f"/x/{i:02d}.jpg", 10) for i in range(10)]
    done = {"/x/00.jpg": 10, "/x/01.jpg": 10, "/x/02.jpg": 99}  # 02 changed size since: embedded again
    r = ShardReader(items, done=done, shard_size=4, first_index=5)
    assert (r.total, r.todo, r.already_done, r.num_shards) == (10, 8, 2, 2)
    shards = list(r.shards())
    assert [s.index for s in shards] == [5, 6]
    assert [it.uri[-6:-4] for s in shards for it in s.items] == ["02", "03", "04", "05", "06", "07", "08", "09"]


def test_the_ray_engine_without_ray_installed_is_one_clear_line(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ValueError, match=r"^--engine ray needs Ray, which is not installed; install the extra: pip install 'corral\[ray\]'$"):
        embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(engine="ray", progress=False))


@pytest.mark.parametrize(
    "address, message",
    [("nonsense", r"^--ray-address nonsense: expected host:port of the cluster's head"), ("127.0.0.1:1", r"^--ray-address 127.0.0.1:1: nothing answers there \(")],
)
def test_a_cluster_address_that_cannot_work_is_one_clear_line_at_once(tmp_path, address, message):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'corral[ray]')")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"not read")
    with pytest.raises(ValueError, match=message):  # refused before Ray's own client, which retries for minutes
        embed(str(tmp_path / "src"), workspace=tmp_path / "ws", config=EmbedConfig(engine="ray", ray_address=address, progress=False))
