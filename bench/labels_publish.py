"""Label store and publishing costs, each against the plainest thing that does the same job.

In one run on one machine:

* label actions: ``LabelStore.assign`` (event + change rows + derived state, one transaction)
  against a baseline that only upserts ``item -> label`` rows in a plain SQLite table with the
  same ``synchronous`` setting; for a small selection (a lasso) and a large one (a cluster);
* reads: ``LabelStore.item_labels()`` against a plain ``SELECT`` of the baseline table;
* backends: the same store in SQLite (the embedded default) and in PostgreSQL, with 1, 4 and 16
  curators acting at once (separate processes, each its own connection, as several API servers
  would be): actions per second, and the p50 / p99 time from a call to its acknowledgement
  (committed, fsynced on both). PostgreSQL is a server this run starts in a temporary folder
  (socket-only, fsync on), or ``--postgres URL``;
* publish and pull: ``corral.storage.publish.publish`` / ``pull`` (label snapshot and exports, sha256 of
  every file, manifest, LATEST, verification) against raw ``boto3`` ``upload_file`` /
  ``download_file`` of the embeddings and the label store file with the same transfer settings,
  to moto's S3 server on 127.0.0.1.

Rounds alternate ours and the baseline; the best of each is kept. Last stdout line is JSON
(``--out FILE`` writes it too), with ``peak_rss_mib``.

    python bench/labels_publish.py
    python bench/labels_publish.py --vectors 200000 --big 20000
    python bench/labels_publish.py --parts backends --out bench/results/labels_backends.json
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

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402

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


def _curator(location: str, user: str, items: int, small: int, actions: int, seed: int, start_at: float) -> list[float]:
    """One curator process: ``actions`` lasso-sized assigns (one in ten an undo) as fast as it
    can, starting at ``start_at``; returns each action's seconds to acknowledgement."""
    ids = [f"{k:032x}" for k in range(items)]
    rng = random.Random(seed)
    store = LabelStore(location)
    lat = []
    try:
        store.version()  # connected before the clock starts
        time.sleep(max(0.0, start_at - time.time()))
        for _ in range(actions):
            t0 = time.perf_counter()
            if rng.random() < 0.1:
                try:
                    store.undo(user=user)
                except ValueError:  # nothing to undo yet
                    continue
            else:
                start = rng.randrange(0, items - small)
                store.assign(ids[start : start + small], f"label-{rng.randrange(40)}", user=user, duration_ms=1000)
            lat.append(time.perf_counter() - t0)
    finally:
        store.close()
    return lat


def bench_backends(root: Path, *, pg_url: str | None, items: int, small: int, actions: int, curators: tuple[int, ...]) -> dict:
    """Actions/s and acknowledgement latency of both backends with ``curators`` writing at once."""
    from concurrent.futures import ProcessPoolExecutor

    server = None
    if pg_url is None:
        from bench.pgserver import PgServer, pg_bin

        if pg_bin() is None:
            return {"skipped": "no PostgreSQL server binaries (apt-get install postgresql) and no --postgres URL"}
        server = PgServer(root / "pg", fsync=True).start()
    out: dict = {"small_items": small, "actions_per_curator": actions, "known_items": items, "synchronous": "FULL"}
    try:
        for backend in ("sqlite", "postgresql"):
            res = {}
            for n in curators:
                if backend == "sqlite":
                    location = str(root / f"backends-{n}.sqlite")
                else:
                    location = server.new_database("bench") if server is not None else pg_url
                with LabelStore(location) as s:
                    if backend == "postgresql" and server is None and s.version() > 0:
                        raise SystemExit(f"--postgres {pg_url}: the database must be empty")
                    s.register_items([f"{k:032x}" for k in range(items)])
                start_at = time.time() + 2.0
                with ProcessPoolExecutor(max_workers=n) as pool:
                    futs = [pool.submit(_curator, location, f"curator-{k}", items, small, actions, k, start_at) for k in range(n)]
                    lats = [f.result() for f in futs]
                wall = time.time() - start_at
                flat = np.array([x for lat in lats for x in lat])
                with LabelStore(location) as s:
                    problems = s.check()
                res[f"curators_{n}"] = {
                    "actions": int(flat.size),
                    "seconds": round(wall, 2),
                    "actions_per_s": round(flat.size / wall, 1),
                    "ack_p50_ms": round(float(np.percentile(flat, 50)) * 1000, 2),
                    "ack_p99_ms": round(float(np.percentile(flat, 99)) * 1000, 2),
                    "replay_check_ok": not problems,
                }
                print(f"backend {backend}, {n} curators: {json.dumps(res[f'curators_{n}'])}", file=sys.stderr)
            out[backend] = res
        out["postgresql_server"] = "started by this run (socket-only, fsync on)" if server is not None else "given by --postgres"
        for n in curators:
            k = f"curators_{n}"
            out.setdefault("postgresql_vs_sqlite_actions_per_s", {})[k] = round(out["postgresql"][k]["actions_per_s"] / out["sqlite"][k]["actions_per_s"], 2)
    finally:
        if server is not None:
            server.stop()
    return out


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
    ap.add_argument("--curators", default="1,4,16", help="concurrent curators of the backend comparison (default 1,4,16)")
    ap.add_argument("--curator-actions", type=int, default=200, help="actions per curator in the backend comparison (default 200)")
    ap.add_argument("--postgres", default=None, metavar="URL", help="an empty PostgreSQL database to use (default: start a private server)")
    ap.add_argument("--parts", default="actions,backends,publish", help="which parts to run (default actions,backends,publish)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="corral-bench-storage-"))
    try:
        out = {"bench": "labels_publish", "cpus": os.cpu_count(), **provenance()}
        for sync in ("FULL", "NORMAL") if "actions" in parts else ():
            res = bench_actions(root, items=args.items, small=args.small, big=args.big, actions=args.actions, rounds=args.rounds, synchronous=sync)
            out[f"actions_{sync.lower()}"] = res
            print(f"actions ({sync}): {json.dumps(res)}", file=sys.stderr)
        if "backends" in parts:
            curators = tuple(int(x) for x in args.curators.split(","))
            out["backends"] = bench_backends(root, pg_url=args.postgres, items=args.items, small=args.small, actions=args.curator_actions, curators=curators)
        if "publish" in parts:
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
