"""``corral embed``, ``corral models`` and ``corral detectors``."""

from __future__ import annotations

import argparse
import sys

from corral.api.cli import emit, register


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a folder (recursive), a manifest (.csv/.jsonl/.parquet with a 'uri' column) or s3://bucket/prefix")
    p.add_argument("--workspace", "-w", required=True, help="workspace folder (created if missing)")
    p.add_argument("--model", default=None, help="embedder name (default timm:tf_efficientnet_lite0; see `corral models`)")
    p.add_argument("--weights", default=None, help="weight file or folder for the model (default: packaged weights, the Hugging Face cache, else downloaded once from the hub)")
    p.add_argument("--offline", action="store_true", help="never download weights (as HF_HUB_OFFLINE=1 does); fail if they are not on this machine")
    p.add_argument("--random-weights", action="store_true", help="allow an untrained model when no weights are on this machine; nothing downloads (for testing only)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="images (with --detector: crops) per model call (default 16 on CPU, 256 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="decode worker processes (default: all cores on CUDA, half on CPU)")
    p.add_argument("--shard-size", type=int, default=4096, help="items per output shard, the unit of resume (default 4096)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="vector type on disk (default float32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    p.add_argument("--gpu-decode", choices=("auto", "on", "off"), default="auto", help="decode JPEGs on the GPU with nvJPEG (default: on with CUDA)")
    p.add_argument("--max-pixels", type=int, default=None, help="skip images with more pixels than this (decompression bombs; default 89,478,485)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for s3:// sources (else the usual AWS settings)")
    p.add_argument("--name", default=None, help="embedding set name inside the workspace (default: from the model name, plus the detector's)")
    d = p.add_argument_group("detection", "embed what a detector finds (faces, objects) instead of whole images; see `corral detectors`")
    d.add_argument("--detector", default=None, help="detector name, or 'face' for the best face detector installed; each box becomes a crop item")
    d.add_argument("--detector-weights", default=None, help="weight file for detectors that need one (torchvision:*)")
    d.add_argument("--min-score", type=float, default=None, help="drop boxes scoring below this, in the detector's own units (default: its own threshold)")
    d.add_argument("--min-size", type=int, default=40, help="drop boxes with a side under this many pixels; face detectors upsample to find faces this small (default 40)")
    d.add_argument("--pad", type=float, default=0.2, help="context cut around each box, as a fraction of its longer side on each side (default 0.2)")
    d.add_argument("--detect-max-side", type=int, default=2048, help="search larger images at this size, boxes scaled back (default 2048)")


def _run_embed(args: argparse.Namespace) -> int:
    from corral.pipeline.embed import EmbedConfig, embed
    from corral.pipeline.registry import DEFAULT_MODEL

    cfg = EmbedConfig(
        model=args.model or DEFAULT_MODEL,
        weights=args.weights,
        random_weights=args.random_weights,
        offline=args.offline,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        shard_size=args.shard_size,
        dtype=args.dtype,
        compile=args.compile,
        gpu_decode={"auto": None, "on": True, "off": False}[args.gpu_decode],
        endpoint_url=args.endpoint_url,
        name=args.name,
        progress=not args.quiet,
        detector=args.detector,
        detector_weights=args.detector_weights,
        min_score=args.min_score,
        min_size=args.min_size,
        pad=args.pad,
        detect_max_side=args.detect_max_side,
    )
    if args.max_pixels:
        cfg.max_pixels = args.max_pixels
    res = embed(args.source, workspace=args.workspace, config=cfg)
    if not args.quiet:
        t = res.timings
        skipped = ", ".join(f"{k} {v}" for k, v in res.skipped_by_reason.items()) or "none"
        rate = res.embedded / res.seconds if res.seconds else 0.0
        what = f"{res.embedded} crops from {res.items} items" if res.detection else f"{res.embedded} of {res.items} items"
        unit = "crops/s" if res.detection else "img/s"
        sys.stderr.write(
            f"embedded {what} ({res.already_done} done earlier) with {res.model} "
            f"on {res.device} in {res.seconds:.1f}s ({rate:.1f} {unit}); duplicates {res.duplicates}; skipped {res.skipped} ({skipped})\n"
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


def _run_detectors(args: argparse.Namespace) -> int:
    from corral.pipeline import detect

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
