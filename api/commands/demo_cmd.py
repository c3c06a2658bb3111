"""``corral sample`` and ``corral demo``: the offline built-in sample, end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.api.cli import emit, register


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="where to write the sample (images/<digit>/*.png and manifest.csv)")
    p.add_argument("--count", type=int, default=600, help="number of images (default 600, at most 1797)")


def _run_sample(args: argparse.Namespace) -> int:
    from corral.pipeline.sample import write_sample

    out = write_sample(args.folder, count=args.count)
    if not args.quiet:
        sys.stderr.write(f"wrote {out['images']} images of {out['classes']} digits to {out['folder']} (labels in {out['manifest']})\n")
    emit(out)
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", "-w", default="sample-workspace", help="workspace for the demo (default ./sample-workspace)")
    p.add_argument("--count", type=int, default=600, help="sample images (default 600)")
    p.add_argument("--no-serve", action="store_true", help="stop after building; do not start the viewer")
    p.add_argument("--port", type=int, default=8765, help="viewer port (default 8765)")


def _run_demo(args: argparse.Namespace) -> int:
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.mapping import build_map
    from corral.pipeline.sample import write_sample

    ws = Path(args.workspace).resolve()
    sample = write_sample(ws / "sample", count=args.count)
    res = embed(sample["folder"], workspace=ws, config=EmbedConfig(progress=not args.quiet))
    if not args.quiet:
        sys.stderr.write(f"embedded {res.embedded} sample images in {res.seconds:.1f}s into {ws}; mapping them (UMAP + HDBSCAN)...\n")
    mapped = build_map(workspace=ws)
    m = mapped.summary()
    summary = {"workspace": str(ws), "sample": sample, "embed": res.summary(), "map": m}
    if not args.quiet:
        sys.stderr.write(f"map {m['map']}: {m['points']} points in {m['clusters']} clusters.\nThe true labels are in {sample['manifest']} (try `corral labels import` on it later).\n")
    emit(summary)
    if args.no_serve:
        return 0
    from corral.api.cli import main as corral

    return corral(["serve", "--workspace", str(ws), "--port", str(args.port)])


register("sample", "write the built-in sample images (handwritten digits shipped with scikit-learn)", _add_sample, _run_sample)
register("demo", "write the built-in sample, embed it, map it and open the viewer", _add_demo, _run_demo)
