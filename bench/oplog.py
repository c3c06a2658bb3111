"""What the operation log costs a label action, measured against the same server without it.

One real server (uvicorn on 127.0.0.1) on a generated workspace (a map of ``--points`` points, no
images needed); one curator names ``--select`` random points per action over HTTP, on one
keep-alive connection, as the viewer does. Rounds alternate the log on (every action recorded, as
``corral serve`` runs) and off (the recorder finds no log); each round acts ``--actions`` times.
The figure that matters is the time from sending an action to its acknowledgement (the label
store's commit, fsynced): p50 and p99 for each, and their ratio. The rows the log holds at the end
are counted against the actions sent with it on.

Last stdout line is JSON (``--out FILE`` writes it too), with ``peak_rss_mib``.

    python bench/oplog.py
    python bench/oplog.py --actions 400 --rounds 4 --out bench/results/oplog.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402


def build_workspace(root: Path, n: int, seed: int = 0) -> str:
    """A workspace with one map of ``n`` points and a curator; returns the curator's token."""
    import numpy as np

    from corral.api.auth import UserStore
    from corral.storage.labels import LabelStore
    from corral.storage.maps import clusters_table, points_table, write_map
    from corral.storage.workspace import Workspace

    rng = np.random.default_rng(seed)
    ws = Workspace(root).ensure()
    ids = [f"{v:032x}" for v in rng.integers(1, 2**62, n, dtype=np.int64)]
    cl = rng.integers(0, 8, n).astype(np.int32)
    write_map(
        ws.map_dir("main"),
        points=points_table(ids=ids, xy=rng.normal(size=(n, 2)).astype(np.float32), cluster=cl, probability=np.ones(n, np.float32), outlier_score=np.zeros(n, np.float32), is_new=np.zeros(n, bool)),
        clusters=clusters_table(cluster=np.arange(8), size=np.bincount(cl, minlength=8), exemplars=[[ids[j] for j in np.flatnonzero(cl == c)[:3]] for c in range(8)], cohesion=np.full(8, 0.5)),
        meta={"created_at": "2026-01-01T00:00:00Z", "embeddings": "bench", "model": "bench"},
    )
    with LabelStore.open(ws) as store:
        store.register_items(ids)
    return UserStore(ws.root).add("curator", role="curator") or ""


def act(conn: http.client.HTTPConnection, token: str, body: dict) -> float:
    """One label action; seconds from sending it to its answer."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", "/api/maps/main/actions/assign", body=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    res = conn.getresponse()
    payload = res.read()
    took = time.perf_counter() - t0
    if res.status != 200:
        raise SystemExit(f"action failed: {res.status} {payload[:200]!r}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=20_000, help="points on the map")
    ap.add_argument("--select", type=int, default=200, help="points named per action")
    ap.add_argument("--actions", type=int, default=200, help="actions per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each (alternating)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args()

    import uvicorn

    from corral.api.app import create_app
    from corral.api.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-oplog-"))
    token = build_workspace(tmp / "ws", args.points)
    app = create_app(Settings(workspace=tmp / "ws"))
    writer = app.state.ctx.oplog
    sock_port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=sock_port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    rng = random.Random(0)
    conn = http.client.HTTPConnection("127.0.0.1", sock_port, timeout=60)
    times: dict[str, list[float]] = {"with_log": [], "without_log": []}
    sent_with_log = 0
    for i in range(2):  # warm up: the store's first actions, the route's first calls
        act(conn, token, {"indices": rng.sample(range(args.points), args.select), "label": f"warm{i}"})
    time.sleep(0.5)  # the last warm-up's row is handed in just after its answer left
    before_rows = _rows(writer)
    for r in range(args.rounds):
        for mode in ("with_log", "without_log") if r % 2 == 0 else ("without_log", "with_log"):
            app.state.ctx.oplog = writer if mode == "with_log" else None
            for i in range(args.actions):
                times[mode].append(act(conn, token, {"indices": rng.sample(range(args.points), args.select), "label": f"label{i % 20}"}))
            sent_with_log += args.actions if mode == "with_log" else 0
    app.state.ctx.oplog = writer
    writer.flush(30.0)
    logged = _rows(writer) - before_rows
    conn.close()
    server.should_exit = True
    thread.join(10)

    def summary(xs: list[float]) -> dict[str, float]:
        ms = sorted(x * 1000 for x in xs)
        return {"actions": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2), "actions_per_s": round(len(ms) / (sum(ms) / 1000), 1)}

    on, off = summary(times["with_log"]), summary(times["without_log"])
    result = {
        "bench": "oplog",
        "what": "HTTP label action (assign) acknowledgement with the operation log on vs off, same server, rounds alternating",
        "points": args.points,
        "select": args.select,
        "with_log": on,
        "without_log": off,
        "p50_ratio": round(on["p50_ms"] / off["p50_ms"], 3),
        "p99_ratio": round(on["p99_ms"] / off["p99_ms"], 3),
        "rows_logged": logged,
        "actions_sent_with_log": sent_with_log,
        "peak_rss_mib": peak_rss_mib(),
        **provenance(),
    }
    emit_result(result, args.out)


def _rows(writer) -> int:
    writer.flush(30.0)
    return len(list(writer.log.iter_all()))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
