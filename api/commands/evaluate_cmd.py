"""``corral evaluate``: which embedding set of a workspace separates the labels best."""

from __future__ import annotations

import argparse
import sys

from corral.api.cli import emit, register


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", "-w", required=True, help="workspace folder")
    p.add_argument("--labels", default=None, help="a labelled sample (CSV/JSONL/Parquet: id or uri/path, label) instead of the label store")
    p.add_argument("--k", type=int, default=10, help="neighbours for the kNN label agreement (default 10)")
    p.add_argument("--fresh", action="store_true", help="cluster every set anew with default map settings (one rule for all), ignoring existing maps")


def _run(args: argparse.Namespace) -> int:
    from corral.pipeline.evaluate import evaluate_workspace

    if args.k < 1:
        raise ValueError(f"--k {args.k}: must be at least 1")
    res = evaluate_workspace(workspace=args.workspace, labels_file=args.labels, k=args.k, fresh=args.fresh)
    if not args.quiet:
        w = sys.stderr.write
        w(f"{res.labelled:,} labelled items of {res.classes} labels ({res.labels}); best first:\n")
        w(f"  {'embedding set':<28} {'model':<32} {'kNN agree':>9} {'purity':>7} {'ARI':>6} {'items/action':>12}\n")
        for s in res.sets:
            if s.skipped:
                w(f"  {s.embeddings:<28} {str(s.model):<32} skipped: {s.skipped}\n")
                continue
            fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
            w(f"  {s.embeddings:<28} {str(s.model):<32} {fmt(s.knn_agreement):>9} {fmt(s.purity):>7} {fmt(s.ari):>6} {fmt(s.items_per_action, 1):>12}\n")
    emit(res.summary())
    return 0


register("evaluate", "compare the workspace's embedding sets on the labels so far (kNN agreement, purity/ARI, items per action)", _add, _run)
