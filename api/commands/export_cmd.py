"""``corral export``: labels and embeddings in the formats people expect."""

from __future__ import annotations

import argparse
import sys

from corral.api.cli import emit, register


def _add(p: argparse.ArgumentParser) -> None:
    from corral.storage.exports import FORMATS, LINK_MODES

    p.add_argument("--workspace", "-w", required=True, help="workspace folder")
    p.add_argument(
        "--format",
        "-f",
        required=True,
        choices=FORMATS,
        help=(
            "parquet, csv, jsonl (items with label state), embeddings (Parquet), coco (revised boxes), labelme (a folder of JSON, one per photo), "
            "imagefolder, curators, interactions (review pages' tiles), passes (proposals passed over), operations (the operation log)"
        ),
    )
    p.add_argument("--out", "-o", required=True, help="file to write (a folder for imagefolder and labelme)")
    p.add_argument("--embeddings", default=None, help="embedding set for --format embeddings (default: the only / newest one)")
    p.add_argument("--mode", choices=LINK_MODES, default="copy", help="imagefolder: copy files (default), or symlink / hardlink them")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for s3:// images (imagefolder)")


def _run(args: argparse.Namespace) -> int:
    from corral.storage.exports import export

    res = export(args.workspace, format=args.format, out=args.out, embeddings=args.embeddings, mode=args.mode, overwrite=args.overwrite, endpoint_url=args.endpoint_url)
    if not args.quiet:
        skipped = ", ".join(f"{k} {v}" for k, v in res.skipped.items()) or "none"
        sys.stderr.write(f"exported {res.rows:,} rows ({res.labels} labels, store version {res.labels_version}) as {res.format} to {res.out} in {res.seconds:.1f}s; skipped: {skipped}\n")
    emit(res.summary())
    return 0


register("export", "export labels (parquet, csv, jsonl, embeddings, coco, labelme, imagefolder, curators, interactions, passes) or the operation log (operations)", _add, _run)
