"""``corral embed``, ``corral models`` and ``corral detectors``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from corral.api.cli import CliError, emit, register


def _add_embed(p: argparse.ArgumentParser) -> None:
    from corral.api.flags import add_option_flags
    from corral.pipeline.embed import EmbedConfig

    p.add_argument("source", help="a folder (recursive), a manifest (.csv/.jsonl/.parquet with a 'uri' column) or s3://bucket/prefix")
    p.add_argument("--workspace", "-w", required=True, help="workspace folder (created if missing)")
    add_option_flags(p, EmbedConfig)  # every embed option, from the one place it is said


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`EmbedConfig` the flags describe (``--quiet`` hides the progress bar)."""
    from corral.api.flags import options_from_args
    from corral.pipeline.embed import EmbedConfig

    return replace(options_from_args(args, EmbedConfig), progress=not args.quiet)


def _run_embed(args: argparse.Namespace) -> int:
    from corral.pipeline.embed import embed

    cfg = config_from_args(args)
    res = embed(args.source, workspace=args.workspace, config=cfg)
    if not args.quiet:
        t = res.timings
        skipped = ", ".join(f"{k} {v}" for k, v in res.skipped_by_reason.items()) or "none"
        rate = res.embedded / res.seconds if res.seconds else 0.0
        what = f"{res.embedded} crops from {res.items} items" if res.detection else f"{res.embedded} of {res.items} items"
        unit = "crops/s" if res.detection else "img/s"
        sys.stderr.write(
            f"embedded {what} ({res.already_done} done earlier) with {res.model} "
            f"on {res.device}{'' if res.engine == 'local' else ' with ' + res.engine} in {res.seconds:.1f}s ({rate:.1f} {unit}); duplicates {res.duplicates}; skipped {res.skipped} ({skipped})\n"
            f"  decode {t.get('decode_worker_s', 0):.1f}s (summed over workers), waiting for decode {t.get('wait_s', 0):.1f}s, "
            f"infer {t.get('infer_s', 0):.1f}s, write {t.get('write_s', 0):.1f}s; embeddings in {res.embeddings}\n"
        )
        if res.detection:
            d = res.detection
            dropped = ", ".join(f"{k} {d[k]}" for k in ("low_score", "small", "outside", "invalid") if d.get(k)) or "none"
            sys.stderr.write(
                f"  detector {d['detector']}: {d['crops']} crops from {d['images']} images ({d['no_boxes']} with no box, "
                f"{d['too_small']} too small to search); boxes dropped: {dropped}; clipped to the image: {d['clipped']}; "
                f"detect {t.get('detect_s', 0):.1f}s\n"
            )
        if res.skipped:
            sys.stderr.write(f"  the skipped files and reasons are listed in {args.workspace}/skipped.csv\n")
        if res.embedded and not res.detection:
            from corral.pipeline.facehint import face_hint
            from corral.storage.workspace import Workspace

            hint = face_hint(Workspace(args.workspace), res.model)
            if hint:
                sys.stderr.write(f"  hint: {hint}\n")
    emit(res.summary())
    if res.items and not (res.embedded or res.already_done or res.duplicates):
        reasons = ", ".join(f"{k} {v}" for k, v in res.skipped_by_reason.items()) or "none"
        sys.stderr.write(
            f"corral embed: error: nothing was embedded: none of the {res.items} files in {args.source} is an image this can read (skipped: {reasons}; see {args.workspace}/skipped.csv)\n"
        )
        return 1
    return 0


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="a wildcard over timm names, e.g. 'vit_*'")


def _run_models(args: argparse.Namespace) -> int:
    from corral.pipeline import faces, registry, weights

    fams = registry.families()
    lines = [f"{name}: {fam.doc}" for name, fam in sorted(fams.items())]
    offline = sorted(f"timm:{a}" for a in weights.PACKAGED if weights._package_file(a) is not None)
    if faces.available_offline():
        offline.append("dlib:face-resnet")
    matches: list[str] = []
    if args.pattern:
        import fnmatch

        matches = [f"timm:{n}" for n in fams["timm"].names() if fnmatch.fnmatch(n, args.pattern)]
    if not args.quiet:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.write("usable offline (weights installed): " + (", ".join(offline) or "none") + "\n")
        sys.stderr.write("other timm models download their weights once on first use (not with --offline or HF_HUB_OFFLINE=1)\n")
        for m in matches[:200]:
            sys.stderr.write(m + "\n")
    emit({"families": sorted(fams), "offline": offline, "matches": matches})
    return 0


def _add_detectors(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("face", "object"), default=None, help="only detectors of this kind")
    p.add_argument("--report", action="store_true", help="per detector, its precision and recall against the boxes curators revised (needs --workspace)")
    p.add_argument("--workspace", "-w", default=None, help="workspace whose revised boxes --report measures against")
    p.add_argument("--min-iou", type=float, default=0.5, help="--report: the overlap at which a detector's box counts as right (default 0.5)")


def _run_report(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from corral.storage.boxes import KIND, box_state, detector_report
    from corral.storage.labels import LabelStore
    from corral.storage.workspace import Workspace, atomic_write_json

    if not args.workspace:
        raise CliError("--report measures against a workspace's revised boxes: pass --workspace WS")
    if not 0.0 < args.min_iou <= 1.0:
        raise CliError(f"--min-iou {args.min_iou}: expected a number in (0, 1]")
    ws = Workspace(args.workspace)
    if not ws.labels_db.is_file():
        raise CliError(f"workspace {ws.root} has no label store yet: revise some boxes in the viewer's photos view first")
    with LabelStore.open(ws) as store:
        state = box_state(ws.items(), store.in_force(KIND))
        version = store.version()
    rows = detector_report(state, min_iou=args.min_iou)
    out = {"workspace": str(ws.root), "labels_version": version, "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "detectors": rows}
    atomic_write_json(ws.root / "detectors-report.json", out)  # recorded: the figures as of this store version
    if not args.quiet:
        if not rows:
            sys.stderr.write("no photo has a box revision yet: delete, adjust or draw boxes in the photos view first\n")
        for r in rows:
            p = "-" if r["precision"] is None else f"{r['precision']:.3f}"
            rc = "-" if r["recall"] is None else f"{r['recall']:.3f}"
            counts = f"{r['matched']} of {r['boxes_found']} boxes found right, {r['boxes_now']} boxes now"
            sys.stderr.write(f"{r['detector']}: precision {p}, recall {rc} on {r['photos_revised']} revised photos ({counts})\n")
        sys.stderr.write(f"recorded in {ws.root / 'detectors-report.json'}\n")
    emit(json.loads(json.dumps(out)))
    return 0


def _run_detectors(args: argparse.Namespace) -> int:
    from corral.pipeline import detect

    if args.report:
        return _run_report(args)

    rows = [r for r in detect.describe() if args.kind is None or r["kind"] == args.kind]
    try:
        face, face_why = detect.resolve_name("face")
    except detect.DetectorUnavailable as e:
        face, face_why = None, str(e)
    if not args.quiet:
        width = max((len(r["name"]) for r in rows), default=10)
        for r in rows:
            extra = f"  [{r['how_to_fix']}]" if r["how_to_fix"] else ""
            sys.stderr.write(f"{r['name']:<{width}}  {r['kind']:<6}  {r['status']:<13}  {r['doc']}{extra}\n")
        sys.stderr.write(f"face -> {face or 'none'} ({face_why})\n")
    emit({"detectors": rows, "face": face})
    return 0


register("embed", "embed a folder, manifest or S3 prefix into a workspace", _add_embed, _run_embed)
register("detectors", "list detectors (faces, objects), whether each runs here, and what 'face' picks", _add_detectors, _run_detectors)
register("models", "list embedder families and the models usable offline (weights installed)", _add_models, _run_models)
