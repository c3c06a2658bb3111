"""Label store and publishing costs, each against the plainest thing that does the same job.

In one run on one machine:

* label actions: ``LabelStore.assign`` (event + change rows + derived state, one transaction)
  against a baseline that only upserts ``item -> label`` rows in a plain SQLite table with the
  same ``synchronous`` setting; for a small selection (a lasso) and a large one (a cluster);
* reads: ``LabelStore.item_labels()`` against a plain ``SELECT`` of the baseline table;
* publish and pull: ``corral.storage.publish.publish`` / ``pull`` (label snapshot and exports, sha256 of
  every file, manifest, LATEST, verification) against raw ``boto3`` ``upload_file`` /
  ``download_file`` of the embeddings and the label store file with the same transfer settings,
  to moto's S3 server on 127.0.0.1.

Rounds alternate ours and the baseline; the best of each is kept. Last stdout line is JSON
(``--out FILE`` writes it too), with ``peak_rss_mib``.

    python bench/labels_publish.py
    python bench/labels_publish.py --vectors 200000 --big 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit_result, peak_rss_mib  # noqa: E402

from corral.storage.labels import LabelStore  # noqa: E402
from corral.storage.workspace import Workspace, atomic_write_json, atomic_write_table, embedding_table, items_table  # noqa: E402


class PlainTable:
    """The baseline: current labels only, no history, no undo."""

    def __init__(self, path: Path, synchronous: str):
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS labels (item_id TEXT PRIMARY KEY, label TEXT NOT NULL) WITHOUT ROWID")

    def assign(self, ids: list[str], label: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO labels (item_id, label) VALUES (?, ?) ON CONFLICT (item_id) DO UPDATE SET label = excluded.label", [(i, label) for i in ids])
        self.conn.execute("COMMIT")

    def item_labels(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT item_id, label FROM labels").fetchall())


def bench_actions(root: Path, *, items: int, small: int, big: int, actions: int, rounds: int, synchronous: str) -> dict:
    ids = [f"{k:032x}" for k in range(items)]
    labels = [f"label-{k}" for k in range(40)]
    best: dict[str, float] = {}
    lat: dict[str, list[float]] = {"ours_small": [], "base_small": []}
    for r in range(rounds):
        for who in ("ours", "base"):
            d = root / f"{who}-{synchronous}-{r}"
            d.mkdir()
            if who == "ours":
                store = LabelStore(d / "labels.sqlite", synchronous=synchronous)
                store.register_items(ids)
                act = lambda sel, lab, store=store: store.assign(sel, lab, user="bench", duration_ms=1000)  # noqa: E731
            else:
                store = PlainTable(d / "labels.sqlite", synchronous)
                act = store.assign
            rng = random.Random(r)
            for size_name, size, n in (("small", small, actions), ("big", big, max(3, actions // 50))):
                times = []
                for _ in range(n):
                    start = rng.randrange(0, items - size)
                    sel = ids[start : start + size]
                    t0 = time.perf_counter()
                    act(sel, rng.choice(labels))
                    times.append(time.perf_counter() - t0)
                key = f"{who}_{size_name}"
                best[key] = min(best.get(key, float("inf")), statistics.median(times))
                if size_name == "small":
                    lat[key] += times
            t0 = time.perf_counter()
            n_read = len(store.item_labels())
            best[f"{who}_read"] = min(best.get(f"{who}_read", float("inf")), time.perf_counter() - t0)
            if who == "ours":
                store.close()
            shutil.rmtree(d)
    p95 = {k: float(np.percentile(v, 95)) for k, v in lat.items()}
    return {
        "synchronous": synchronous,
        "small_items": small,
        "big_items": big,
        "ours_small_ms": round(best["ours_small"] * 1000, 2),
        "baseline_small_ms": round(best["base_small"] * 1000, 2),
        "ours_small_p95_ms": round(p95["ours_small"] * 1000, 2),
        "baseline_small_p95_ms": round(p95["base_small"] * 1000, 2),
        "ours_big_ms": round(best["ours_big"] * 1000, 1),
        "baseline_big_ms": round(best["base_big"] * 1000, 1),
        "small_ratio": round(best["ours_small"] / best["base_small"], 2),
        "big_ratio": round(best["ours_big"] / best["base_big"], 2),
        "read_items": n_read,
        "ours_read_ms": round(best["ours_read"] * 1000, 1),
        "baseline_read_ms": round(best["base_read"] * 1000, 1),
    }


def make_workspace(root: Path, vectors: int, dim: int) -> Workspace:
    ws = Workspace(root).ensure()
    rng = np.random.default_rng(0)
    ids = [f"{k:032x}" for k in range(vectors)]
    es = ws.embedding_set("bench")
    es.path.mkdir(parents=True)
    shard = 50_000
    for n, start in enumerate(range(0, vectors, shard)):
        v = rng.standard_normal((min(shard, vectors - start), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        emb, items = es.shard_paths(n)
        atomic_write_table(emb, embedding_table(ids[start : start + len(v)], v))
        atomic_write_table(items, items_table([{"id": i, "uri": f"/data/{i}.jpg", "status": "ok"} for i in ids[start : start + len(v)]]))
    atomic_write_json(es.sidecar_path, {"model": "timm:bench", "dim": dim, "dtype": "float32", "count": vectors})
    with LabelStore.open(ws, synchronous="NORMAL") as s:
        for k in range(0, vectors, 1000):
            s.assign(ids[k : k + 1000], f"label-{k // 1000 % 50}", user="bench")
    return ws


def bench_publish(root: Path, *, vectors: int, dim: int, rounds: int, part_size: int) -> dict:
    for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(k, v)
    from boto3.s3.transfer import TransferConfig
    from moto.server import ThreadedMotoServer

    from corral.storage import s3 as s3util
    from corral.storage.publish import publish, pull

    import socket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        ws = make_workspace(root / "ws", vectors, dim)
        client = s3util.client(endpoint)
        client.create_bucket(Bucket="bench")
        cfg = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4)
        # the same bytes a publish sends: the embeddings and the label store (copied raw, unlike
        # publish, which snapshots it with SQLite's backup API so curators can keep working)
        files = [p for p in ws.embeddings_dir.rglob("*") if p.is_file()] + [ws.labels_db]
        best = {"ours_up": float("inf"), "base_up": float("inf"), "ours_down": float("inf"), "base_down": float("inf")}
        total = 0
        for r in range(rounds):
            with LabelStore.open(ws) as s:  # a change, so each round is a fresh version
                s.assign([f"{r:032x}"], f"round-{r}", user="bench")
            t0 = time.perf_counter()
            res = publish(ws, f"s3://bench/ours{r}", endpoint_url=endpoint, part_size=part_size)
            best["ours_up"] = min(best["ours_up"], time.perf_counter() - t0)
            total = res.bytes
            t0 = time.perf_counter()
            for p in files:
                client.upload_file(str(p), "bench", f"base{r}/{p.relative_to(ws.root)}", Config=cfg)
            best["base_up"] = min(best["base_up"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            pull(f"s3://bench/ours{r}", root / f"pull-ours{r}", endpoint_url=endpoint)
            best["ours_down"] = min(best["ours_down"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            for p in files:
                dest = root / f"pull-base{r}" / p.relative_to(ws.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file("bench", f"base{r}/{p.relative_to(ws.root)}", str(dest), Config=cfg)
            best["base_down"] = min(best["base_down"], time.perf_counter() - t0)
            shutil.rmtree(root / f"pull-ours{r}")
            shutil.rmtree(root / f"pull-base{r}")
        base_bytes = sum(p.stat().st_size for p in files)
        mib = 2**20
        return {
            "publish_bytes": total,
            "baseline_bytes": base_bytes,
            "ours_publish_s": round(best["ours_up"], 2),
            "baseline_upload_s": round(best["base_up"], 2),
            "publish_ratio": round(best["ours_up"] / best["base_up"], 2),
            "ours_publish_mib_s": round(total / mib / best["ours_up"], 1),
            "ours_pull_s": round(best["ours_down"], 2),
            "baseline_download_s": round(best["base_down"], 2),
            "pull_ratio": round(best["ours_down"] / best["base_down"], 2),
        }
    finally:
        server.stop()


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000, help="known items in the label store (default 100,000)")
    ap.add_argument("--small", type=int, default=12, help="items in a small action (default 12)")
    ap.add_argument("--big", type=int, default=5_000, help="items in a large action (default 5,000)")
    ap.add_argument("--actions", type=int, default=150, help="small actions per round (default 150)")
    ap.add_argument("--vectors", type=int, default=60_000, help="vectors in the published workspace (default 60,000)")
    ap.add_argument("--dim", type=int, default=256, help="vector dimension (default 256)")
    ap.add_argument("--part-size", type=int, default=8, help="multipart part size in MiB (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best is kept (default 2)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="corral-bench-storage-"))
    try:
        out = {"bench": "labels_publish", "cpus": os.cpu_count()}
        for sync in ("FULL", "NORMAL"):
            res = bench_actions(root, items=args.items, small=args.small, big=args.big, actions=args.actions, rounds=args.rounds, synchronous=sync)
            out[f"actions_{sync.lower()}"] = res
            print(f"actions ({sync}): {json.dumps(res)}", file=sys.stderr)
        res = bench_publish(root, vectors=args.vectors, dim=args.dim, rounds=args.rounds, part_size=args.part_size << 20)
        out["publish"] = res
        print(f"publish: {json.dumps(res)}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["peak_rss_mib"] = peak_rss_mib()
    emit_result(out, args.out)
    return out


if __name__ == "__main__":
    main()
