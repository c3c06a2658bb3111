"""Pre-labelling a new collection: the model the loop learns against the recognition index.

Per data set (embedded and mapped as ``bench/curate.py`` does, cached in ``--cache``): 20% of the
classes are left out (a new collection holds things nobody has named yet) and of every other
class a share is held back as the new collection's items: at random (``random``), or a random
image and the 30% of its class most like it in pixels (``look_run``: a new session, a new light;
chosen without the embedder). The rest is labelled in a label store. Then, on the same labels and
the same map, ``corral suggest --all`` runs three ways:

- ``learnt``: the curation loop's model (:mod:`corral.pipeline.presuggest`, the default);
- ``learnt_ungated``: the same model without the loop's known/new gate (what ``corral suggest``
  did before it had one), in the same split;
- ``index``: ``corral index build`` and the index's pre-labelling threshold.

Reported per set, split and proposer, pooled over three seeds: items suggested, precision (an item
of a left-out class given any name counts as a mistake), the share of the held-back items of named
classes that got their right name (coverage), strangers named, and seconds. Peak memory for the run.

    python bench/suggest.py --out bench/results/suggest.json
    python bench/suggest.py --datasets orl_faces --seeds 1

Last stdout line: one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import emit_result, peak_rss_mib, provenance  # noqa: E402

DATA = Path(os.environ.get("CORRAL_SHARED", REPO.parent / "shared")) / "data"


#: What proposes the labels, in the order they run on each split.
PROPOSERS = ("learnt", "learnt_ungated", "index")


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def one_run(name: str, src: Path, truth: dict[str, str], kind: str, seed: int, cache: Path) -> dict[str, dict[str, Any]]:
    """Label one split of ``src``'s items and pre-label the rest with each of ``PROPOSERS``."""
    from bench.recognize_pose import pixels
    from corral.pipeline.presuggest import suggest_any, suggest_learnt
    from corral.storage.index_build import build_index
    from corral.storage.labels import LabelStore
    from corral.storage.suggestions import read_suggestions
    from corral.storage.workspace import Workspace

    rng = np.random.default_rng(seed)
    items = Workspace(src).items()
    uri = dict(zip(items.column("id").to_pylist(), items.column("uri").to_pylist()))
    ids = sorted(i for i in truth if i in uri)
    classes = sorted({truth[i] for i in ids})
    left_out = set(rng.choice(classes, size=max(1, round(0.2 * len(classes))), replace=False).tolist())
    labelled: dict[str, str] = {}
    for c in classes:
        if c in left_out:
            continue
        members = [i for i in ids if truth[i] == c]
        n = max(1, round(0.3 * len(members)))
        if kind == "random":
            held = set(rng.choice(len(members), size=n, replace=False).tolist())
        else:
            px = pixels([Path(uri[i]) for i in members])
            held = set(np.argsort(-(px @ px[int(rng.integers(len(members)))]), kind="stable")[:n].tolist())
        labelled.update({i: c for k, i in enumerate(members) if k not in held})
    run = cache / f"suggest-{name}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for part in ("embeddings", "maps"):
        shutil.copytree(src / part, run / part)
    ws = Workspace(run)
    store = LabelStore.open(ws)
    for c in classes:
        chosen = [i for i, lb in labelled.items() if lb == c]
        if chosen:
            store.assign(chosen, c, user="bench")
    store.close()
    held_known = sum(1 for i in ids if i not in labelled and truth[i] not in left_out)
    out: dict[str, dict[str, Any]] = {}
    for using in PROPOSERS:
        t0 = time.perf_counter()
        if using == "index":
            build_index(workspace=ws)
            res, _ = suggest_any(workspace=ws, using="index", include_all=True)
        else:
            res = suggest_learnt(workspace=ws, include_all=True, gate=using == "learnt")
        seconds = time.perf_counter() - t0
        sug = read_suggestions(ws, res.map)
        got = dict(zip(sug.table.column("id").to_pylist(), sug.table.column("label").to_pylist()))
        right = sum(truth.get(i) == lb for i, lb in got.items())
        out[using] = {
            "candidates": res.candidates,
            "suggested": len(got),
            "right": right,
            "strangers_named": sum(truth.get(i) in left_out for i in got),
            "held_back_known": held_known,
            "seconds": seconds,
        }
    return out


def seed_row(r: dict[str, Any]) -> dict[str, Any]:
    precision = round(r["right"] / r["suggested"], 4) if r["suggested"] else None
    return {"suggested": r["suggested"], "precision": precision, "coverage": round(r["right"] / r["held_back_known"], 4)}


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tot = {k: sum(r[k] for r in runs) for k in ("candidates", "suggested", "right", "strangers_named", "held_back_known", "seconds")}
    return {
        "suggested": tot["suggested"],
        "precision": round(tot["right"] / tot["suggested"], 4) if tot["suggested"] else None,
        "coverage": round(tot["right"] / tot["held_back_known"], 4) if tot["held_back_known"] else None,
        "strangers_named": tot["strangers_named"],
        "candidates": tot["candidates"],
        "seconds": round(tot["seconds"], 2),
        "per_seed": [seed_row(r) for r in runs],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="coil20,coil100_subset,orl_faces", help="comma separated (folder sets of bench/curate.py)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", default=str(REPO / "bench" / "out" / "curate"), help="embedded and mapped sets are kept here (shared with bench/curate.py)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    from bench.curate_data import prepare

    cache = Path(args.cache)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"bench": "suggest", **provenance(), "seeds": args.seeds, "sets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        ws, truth, timings = prepare(name, DATA, cache, rebuild_map=False)
        entry: dict[str, Any] = {"model": timings["model"], "items": len(truth), "splits": {}}
        for kind in ("random", "look_run"):
            runs = [one_run(name, ws, truth, kind, seed, cache) for seed in range(args.seeds)]
            entry["splits"][kind] = {using: pool([r[using] for r in runs]) for using in PROPOSERS}
            e = entry["splits"][kind]
            log(f"{name}/{kind}: " + "; ".join(f"{u} {e[u]['suggested']} at precision {e[u]['precision']}, coverage {e[u]['coverage']}, strangers {e[u]['strangers_named']}" for u in PROPOSERS))
        result["sets"][name] = entry
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["peak_rss_mib"] = peak_rss_mib()
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
