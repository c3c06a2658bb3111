"""``corral learn``: one round of the learning loop on a map, from the labels so far."""

from __future__ import annotations

import argparse
import sys

from corral.api.cli import emit, register


def _add(p: argparse.ArgumentParser) -> None:
    from corral.pipeline.learn import MODELS, LearnConfig

    d = LearnConfig()
    p.add_argument("--workspace", "-w", required=True, help="workspace folder")
    p.add_argument("--map", default=None, help="map name (default: the newest)")
    p.add_argument("--aim", type=float, default=d.aim, help=f"precision a suggested group aims for (default {d.aim}); the bar never drops below it")
    p.add_argument("--model", choices=MODELS, default=d.model, help="auto (chosen by held-out log loss each round), logreg, spreading or svm (an RBF-kernel SVM)")
    p.add_argument("--max-group", type=int, default=d.max_group, help=f"largest suggested group (default {d.max_group})")
    p.add_argument("--show", type=int, default=10, help="suggested groups to list (default 10)")


def _run(args: argparse.Namespace) -> int:
    from corral.pipeline.learn import LearnConfig
    from corral.pipeline.loop import map_vectors, run_round, write_round
    from corral.storage.labels import LabelStore
    from corral.storage.workspace import Workspace, WorkspaceError

    ws = Workspace(args.workspace)
    if not ws.root.is_dir():
        raise WorkspaceError(f"--workspace {args.workspace}: no such folder")
    cfg = LearnConfig(aim=args.aim, model=args.model, max_group=args.max_group)
    mv = map_vectors(ws, args.map)
    with LabelStore.open(ws) as store:
        rnd = run_round(mv, store, config=cfg)
    path = write_round(ws, rnd)
    res = rnd.result
    pages = rnd.likely
    if not args.quiet:
        left = res.estimated_accuracy_left
        w = sys.stderr.write
        w(f"map {rnd.map_name}, labels version {rnd.labels_version}: learnt {len(res.classes)} labels from {int(res.labelled.sum()):,} items with {res.model}\n")
        w(f"  held-out accuracy {res.heldout_accuracy:.3f} (group-wise folds); bar for suggestions {res.bar:.3f}\n")
        if left is not None:
            w(f"  {int((~res.labelled).sum()):,} items unlabelled; the model's estimated accuracy on them {left:.3f}\n")
        if res.ignored_labels:
            w("  not learnt (too few items): " + ", ".join(f"{k} ({v})" for k, v in sorted(res.ignored_labels.items())) + "\n")
        total = sum(len(g.rows) for g in res.groups)
        w(f"  {len(res.groups)} suggested groups, {total:,} items" + (":\n" if res.groups else "\n"))
        for g in res.groups[: args.show]:
            w(f"    {g.label:<30} {len(g.rows):>5} items, expected precision {g.expected_precision:.3f}\n")
        if pages:
            exp = sum(float(g.confidence.sum()) for g in pages)
            w(f"  {len(pages)} review pages of the likeliest items past the bar (check each tile; the model expects about {exp:,.0f} of {sum(len(g.rows) for g in pages):,} right)\n")
        w(f"  queues: {len(rnd.hard)} hard items, {len(rnd.issues)} possible label errors, {len(rnd.duplicates)} near-duplicate groups\n")
        w(f"  written to {path}; accept groups in the viewer (Learn panel) or with the API\n")
    out = {"map": rnd.map_name, "labels_version": rnd.labels_version, "out": str(path), "likely_pages": len(pages)}
    emit({**res.summary(), **out, "hard": len(rnd.hard), "issues": len(rnd.issues), "duplicates": len(rnd.duplicates)})
    return 0


register("learn", "learn from the labels so far: suggested groups, hard items, label errors, near-duplicates", _add, _run)
