"""Start-up cost of the first command a user runs: ``corral demo --no-serve`` twice, in one run.

The first run gets an empty numba cache folder (``NUMBA_CACHE_DIR``), so umap-learn's and
fast_hdbscan's kernels compile and are written there; the second run, in a fresh workspace of
its own (so nothing but the compiled code is reused), reads them back. Each run is a separate
``corral`` process, timed from its start to its exit (with ``--no-serve`` that is the moment
the viewer's link would be printed). The map's own seconds per step come from the command's
JSON line. Goal (issue 12): the second run in <= 25 s on 2 cores.

A last run repeats the demo in the first run's workspace, as a user who types ``corral demo``
twice does: the embeddings are found and kept, so it measures start-up plus the map alone.

    python bench/startup.py --out bench/out/startup.json
    python bench/startup.py --count 300 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit_result, peak_rss_mib  # noqa: E402


def _corral() -> list[str]:
    """The ``corral`` command of this interpreter's environment (``python -m corral`` otherwise)."""
    exe = Path(sys.executable).with_name("corral")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "corral"]


def run_demo(*, workspace: Path, count: int, cache: Path) -> dict[str, Any]:
    """One ``corral demo --no-serve``: wall seconds, the map's step seconds, the cold-cache notice."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    cmd = [*_corral(), "demo", "--no-serve", "--workspace", str(workspace), "--count", str(count)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"corral demo exited {proc.returncode}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall_s": round(wall, 2),
        "embed_s": round(float(summary["embed"].get("seconds", 0.0)), 2),
        "embedded": summary["embed"].get("embedded"),
        "map_s": summary["map"]["seconds"],
        "clusters": summary["map"]["clusters"],
        "said_compiling": "compiling the map's kernels once" in proc.stderr,
    }


def _commit() -> str:
    """The checked-out commit, with ``+dirty`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _device() -> dict[str, Any]:
    """The machine, as far as start-up time depends on it (CPU only: the demo runs no GPU code here)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"kind": "cpu", "cpus": cpus, "cpu": model, "platform": platform.platform(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}


def cache_files(folder: Path) -> dict[str, float]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "mib": round(sum(p.stat().st_size for p in files) / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=600, help="sample images (default 600, the demo's default)")
    ap.add_argument("--runs", type=int, default=2, help="runs in all; the first has a cold cache (default 2)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.runs < 2:
        ap.error("--runs: at least 2 (a cold and a warm run)")
    device = _device()  # the load average before our own runs add to it
    with tempfile.TemporaryDirectory(prefix="corral-startup-") as tmp:
        root = Path(tmp)
        cache = root / "numba-cache"
        runs = []
        for i in range(args.runs):
            runs.append(run_demo(workspace=root / f"ws{i}", count=args.count, cache=cache))
            sys.stderr.write(f"run {i + 1}: {runs[-1]}\n")
        rerun = run_demo(workspace=root / "ws0", count=args.count, cache=cache)
        sys.stderr.write(f"rerun in the first workspace: {rerun}\n")
        cached = cache_files(cache)
    first, warm = runs[0], runs[1:]
    best_warm = min(r["wall_s"] for r in warm)
    result = {
        "bench": "startup",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "device": device,
        "command": "corral demo --no-serve",
        "count": args.count,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "first_run": first,
        "warm_runs": warm,
        "first_wall_s": first["wall_s"],
        "second_wall_s": warm[0]["wall_s"],
        "speedup": round(first["wall_s"] / best_warm, 2) if best_warm else None,
        "goal_second_s": 25.0,
        "goal_met": warm[0]["wall_s"] <= 25.0,
        "rerun_same_workspace": rerun,
        "numba_cache": cached,
        "peak_rss_mib_children": peak_rss_mib(children=True),
        "peak_rss_mib": peak_rss_mib(),
    }
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
