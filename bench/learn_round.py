"""How long one round of the learning loop takes, today's code against the round before it was
made parallel, in the same run on the same labels.

A round (``corral.pipeline.loop.run_round``: the three models out of fold, calibration, the
regrouping of what is left, the queues) runs after every naming while the viewer's panel is open.
The baseline is the same round with the fits one after another (each with its BLAS threads) and the
regrouping's distances from ``scipy.spatial.distance.pdist``: what the loop did before. Both must
give the same answers; the JSON says whether they did.

    python bench/learn_round.py --dataset mnist_test --named 0.4

The labels are the true classes of a random ``--named`` share of the items (seeded). Uses the
workspaces ``bench/curate.py`` caches (``bench/out/curate``), embedding and mapping the set first
when there is none.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402
from bench.curate_data import DATASETS, prepare  # noqa: E402


class _Snapshot:
    def __init__(self, items: dict[str, tuple[str]]):
        self.version = 1
        self.items = items
        self.exclusions: dict[str, list[str]] = {}


class _Labels:
    """A label store's snapshot, as a round reads it, for a fixed set of labels."""

    def __init__(self, labels: dict[str, str]):
        self._snap = _Snapshot({i: (lb,) for i, lb in labels.items()})

    def snapshot(self) -> _Snapshot:
        return self._snap

    def version(self) -> int:
        return 1


def _timed_round(mv, store, *, baseline: bool) -> tuple[float, dict, object]:
    from scipy.spatial.distance import pdist

    from corral.pipeline import learn as learn_mod
    from corral.pipeline import loop as loop_mod
    from corral.pipeline import regroup as regroup_mod

    parts: dict[str, float] = {}
    saved = (learn_mod.MAX_FIT_THREADS, regroup_mod.cosine_condensed, loop_mod.learn, loop_mod.regroup_rest)
    if baseline:
        learn_mod.MAX_FIT_THREADS = 1
        regroup_mod.cosine_condensed = lambda q: np.maximum(pdist(q, "cosine"), 0.0)

    def timing(name, fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] = round(parts.get(name, 0.0) + time.perf_counter() - t, 2)

        return run

    loop_mod.learn = timing("learn_s", loop_mod.learn)
    loop_mod.regroup_rest = timing("regroup_s", loop_mod.regroup_rest)
    try:
        t0 = time.perf_counter()
        rnd = loop_mod.run_round(mv, store)
        return time.perf_counter() - t0, parts, rnd
    finally:
        learn_mod.MAX_FIT_THREADS, regroup_mod.cosine_condensed, loop_mod.learn, loop_mod.regroup_rest = saved


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist_test", choices=list(DATASETS))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding the shared data sets")
    ap.add_argument("--work", default=str(REPO / "bench" / "out" / "curate"), help="cache of workspaces (bench/curate.py's)")
    ap.add_argument("--named", type=float, default=0.4, help="share of the items named (their true class), at random")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of each, alternating (the best of each is reported)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not 0.0 < args.named < 1.0:
        ap.error("--named: must be between 0 and 1")
    measured = provenance()
    from corral.pipeline.device import cpu_count
    from corral.pipeline.loop import map_vectors

    ws, truth, _ = prepare(args.dataset, Path(args.data), Path(args.work), rebuild_map=False)
    mv = map_vectors(ws)
    rng = np.random.default_rng(0)
    named = {i: truth[i] for i in mv.ids.tolist() if rng.random() < args.named}
    store = _Labels(named)
    runs: dict[str, list[tuple[float, dict]]] = {"baseline": [], "parallel": []}
    answers = {}
    for _ in range(args.repeats):
        for mode in ("baseline", "parallel"):
            secs, parts, rnd = _timed_round(mv, store, baseline=mode == "baseline")
            runs[mode].append((secs, parts))
            answers[mode] = rnd
            print(f"  {mode}: {secs:.1f} s {parts}", file=sys.stderr, flush=True)
    a, b = answers["baseline"], answers["parallel"]
    same = {
        "confidence_max_diff": float(np.abs(a.result.confidence - b.result.confidence).max()),
        "same_model": a.result.model == b.result.model,
        "same_suggested_groups": [(g.label, g.rows.tolist()) for g in a.result.groups] == [(g.label, g.rows.tolist()) for g in b.result.groups],
        "same_regrouped_groups": (a.regrouping is None and b.regrouping is None)
        or (a.regrouping is not None and b.regrouping is not None and [g.tolist() for g in a.regrouping.groups] == [g.tolist() for g in b.regrouping.groups]),
    }
    best = {m: min(r, key=lambda x: x[0]) for m, r in runs.items()}
    result = {
        "bench": "learn_round",
        **measured,
        "dataset": args.dataset,
        "items": len(mv.ids),
        "named": len(named),
        "cpus": cpu_count(),
        "baseline_s": round(best["baseline"][0], 2),
        "baseline_parts": best["baseline"][1],
        "round_s": round(best["parallel"][0], 2),
        "round_parts": best["parallel"][1],
        "speedup": round(best["baseline"][0] / best["parallel"][0], 2),
        "same_answers": same,
        "model": b.result.model,
        "peak_rss_mib": peak_rss_mib(),
    }
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
