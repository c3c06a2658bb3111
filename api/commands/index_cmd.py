"""``corral index`` (build / update / info), ``corral recognize`` and ``corral suggest``, plus the
``--recognize-only`` mode of ``corral serve``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from corral.api.cli import CliError, emit, register


def _rule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=None, help="neighbours that vote (default 10)")
    p.add_argument("--tau", type=float, default=None, help="softmax temperature of the votes (default 0.05; smaller: the nearest counts more)")
    p.add_argument("--threshold", type=float, default=None, help="fixed unknown threshold on the margin (score minus the label's typical score) instead of the calibrated one")
    p.add_argument(
        "--recall-target",
        type=float,
        default=None,
        help="lower the threshold until this share of correctly named known items is kept (e.g. 0.97), at the cost of naming more unknown items; default off (balanced threshold)",
    )
    p.add_argument(
        "--calibration",
        choices=("runs", "random"),
        default=None,
        help="how the threshold's held-out known items are picked: runs of look-alike neighbours, as unseen poses are (default), or random items (near-twins of indexed ones: a stricter threshold)",
    )


def _add_index(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build the index from scratch", description="build the recognition index from the labelled embeddings (a full rebuild)")
    u = sub.add_parser("update", help="add newly labelled items without a rebuild", description="bring the index up to the label store's version: add new items, refresh labels, recalibrate")
    for sp in (b, u):
        sp.add_argument("--workspace", "-w", required=True, help="workspace folder")
        sp.add_argument("--embeddings", default=None, help="embedding set to index (default: the newest)")
        sp.add_argument("--factory", default=None, help="FAISS index-factory string, e.g. Flat, HNSW32,Flat, IVF1024,PQ192x4fs,RFlat (default: Flat up to 50k vectors, IVF-PQ above)")
        sp.add_argument("--nprobe", type=int, default=None, help="fixed IVF nprobe instead of tuning it")
        sp.add_argument("--ef-search", type=int, default=None, help="fixed HNSW efSearch instead of tuning it")
        sp.add_argument("--target-recall", type=float, default=0.95, help="recall@1 against exact search the search knobs are tuned for (default 0.95)")
        sp.add_argument("--device", choices=("auto", "cpu"), default="auto", help="auto: build on the GPU when FAISS sees one")
        _rule_args(sp)
    b.add_argument(
        "--using",
        choices=("learnt", "index"),
        default="index",
        help="what names a query: the index alone (default: the better balance measured), or also the curation loop's model learnt from the labels (fewer strangers named, fewer known ones)",
    )
    u.add_argument("--using", choices=("learnt", "index"), default=None, help="add (learnt) or drop (index) the learnt head; default: keep what the index has, refitted on the new labels")
    u.add_argument("--no-recalibrate", action="store_true", help="keep the current threshold")
    i = sub.add_parser("info", help="show the index manifest", description="show the index's type, counts, model and calibration")
    i.add_argument("--workspace", "-w", required=True, help="workspace folder (or an index folder)")


def _config(args: argparse.Namespace):
    from corral.storage.index_build import IndexConfig
    from corral.storage.recognizer import RuleConfig

    rule = RuleConfig()
    if args.k is not None:
        rule.k = args.k
    if args.tau is not None:
        rule.tau = args.tau
    rule.threshold = args.threshold
    if getattr(args, "calibration", None) is not None:
        rule.grouping = args.calibration
    if getattr(args, "recall_target", None) is not None:
        rule.recall_target = args.recall_target or None
    search = {}
    if args.nprobe is not None:
        search["nprobe"] = args.nprobe
    if args.ef_search is not None:
        search["efSearch"] = args.ef_search
    return IndexConfig(factory=args.factory, embeddings=args.embeddings, rule=rule, search=search or None, target_recall=args.target_recall, device=args.device)


def _run_index(args: argparse.Namespace) -> int:
    from corral.storage.index import read_manifest

    if args.index_command == "info":
        emit(read_manifest(args.workspace))
        return 0
    from corral.pipeline.learnt_index import build, update

    cfg = _config(args)
    if args.index_command == "build":
        res = build(workspace=args.workspace, config=cfg, using=args.using)
    else:
        res = update(workspace=args.workspace, config=cfg, recalibrate=not args.no_recalibrate, using=args.using)
    if not args.quiet:
        at = (res.calibration or {}).get("at_threshold") or {}
        sys.stderr.write(
            f"index {res.mode}: {res.rows} rows ({res.labelled} labelled in {res.labels} labels, {res.negatives} negatives, {res.inactive} inactive; {res.added} added) "
            f"with {res.factory} {res.search or ''} on {res.device} in {res.seconds:.1f}s\n"
            f"  unknown threshold {res.threshold:.4f}: precision {at.get('precision')}, recall {at.get('recall')}, unknown rejection {at.get('unknown_rejection')} on held-out items\n"
        )
        if res.using == "learnt":
            info = res.head.get("info") or {}
            bar = res.head.get("threshold", 0)
            sys.stderr.write(f"  learnt head on {res.head.get('labels')} labels: a name needs confidence >= {bar:.3f} (held-out accuracy {info.get('heldout_accuracy')}) and the index's rule\n")
        elif getattr(args, "using", None) == "learnt":
            sys.stderr.write("  no learnt head (too few labels to learn from: 2 labels with 3 items each); the index answers alone\n")
        if res.missing_vectors:
            sys.stderr.write(f"  {res.missing_vectors} labelled items have no vector in the embedding set and were left out\n")
    emit(res.summary())
    return 0


def _add_recognize(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="image files (folders are searched for images)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workspace", "-w", default=None, help="workspace with an index (`corral index build`)")
    src.add_argument("--from", dest="source", default=None, help="s3://bucket/prefix or a local published folder")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for --from s3://...")
    p.add_argument("--k", type=int, default=None, help="neighbours that vote (default: the index's)")
    p.add_argument("--threshold", type=float, default=None, help="unknown when the margin (score minus the label's typical score) is below this (default: the calibrated one)")
    p.add_argument("--batch-size", type=int, default=32, help="images embedded together (default 32)")
    p.add_argument("--weights", default=None, help="weight file or folder of the index's embedder")
    p.add_argument("--offline", action="store_true", help="never download the embedder's weights (as HF_HUB_OFFLINE=1 does)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--detector", default=None, help="name every box this detector finds (default: the detector the index's crops were cut with, if any); 'none' names whole images")


def _run_recognize(args: argparse.Namespace) -> int:
    from corral.pipeline.recognize import ImageEncoder, recognize_paths
    from corral.storage.index_source import open_source
    from corral.storage.recognizer import Recognizer

    if args.workspace is not None and not Path(args.workspace).expanduser().is_dir():
        raise CliError(f"--workspace {args.workspace}: no such folder; pass a workspace with an index (`corral index build --workspace DIR`) or --from a published index")
    src = open_source(args.source or args.workspace, endpoint_url=args.endpoint_url)
    rec = Recognizer(src.load(src.latest()))
    detection = dict(rec.index.meta.detection or {})
    if args.detector is not None:
        detection = {} if args.detector.lower() == "none" else {**detection, "detector": args.detector}
    if detection.get("detector"):
        return _recognize_boxes(args, rec, detection)
    enc = ImageEncoder(model=rec.index.meta.model, weights_hash=rec.index.meta.weights_hash, weights=args.weights, device=args.device, offline=args.offline or None)
    results = recognize_paths(args.files, recognizer=rec, encoder=enc, k=args.k, threshold=args.threshold, batch_size=args.batch_size)
    if not results:
        raise CliError(f"no image files in {' '.join(args.files)}")
    failed = sum(1 for r in results if r.error)
    if not args.quiet:
        for r in results:
            what = f"error: {r.error}" if r.error else f"{r.label if r.label is not None else 'unknown'} ({r.score:.3f})"
            sys.stderr.write(f"{r.input}\t{what}\n")
        sys.stderr.write(f"{len(results) - failed} recognised, {failed} failed; threshold {rec.threshold:.4f}\n")
    emit({"results": [r.as_dict() for r in results]})
    return 0 if failed < len(results) else 1


def _recognize_boxes(args: argparse.Namespace, rec: Any, detection: dict[str, Any]) -> int:
    """``corral recognize`` for an index of detector crops: a name (or unknown) per box."""
    from corral.pipeline.recognize import expand_paths
    from corral.pipeline.regions import RegionEncoder, recognize_regions

    files = expand_paths(args.files)
    if not files:
        raise CliError(f"no image files in {' '.join(args.files)}")
    meta = rec.index.meta
    opts = {k: detection[k] for k in ("min_size", "pad") if detection.get(k) is not None}
    enc = RegionEncoder(detector=detection["detector"], model=meta.model, weights_hash=meta.weights_hash, weights=args.weights, device=args.device, offline=args.offline or None, **opts)
    results = recognize_regions(files, recognizer=rec, encoder=enc, k=args.k, threshold=args.threshold)
    failed = sum(1 for r in results if r.get("error"))
    if not args.quiet:
        for r in results:
            if r.get("error"):
                sys.stderr.write(f"{r['input']}\terror: {r['error']}\n")
                continue
            names = ", ".join(f"{g['label'] if g['label'] is not None else 'unknown'} ({g['score']:.3f}) at {g['bbox']}" for g in r["regions"]) or "no boxes"
            sys.stderr.write(f"{r['input']}\t{names}\n")
        boxes = sum(len(r["regions"]) for r in results)
        sys.stderr.write(f"{boxes} boxes in {len(results) - failed} images ({enc.detector.name}), {failed} failed; threshold {rec.threshold:.4f}\n")
    emit({"detector": enc.detector.name, "results": results})
    return 0 if failed < len(results) else 1


def _add_suggest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", "-w", required=True, help="workspace with a map and labels (and, for --using index, an index)")
    p.add_argument("--map", default=None, help="map name (default: the newest)")
    p.add_argument(
        "--using",
        choices=("learnt", "index"),
        default="learnt",
        help="what proposes the labels: the model the curation loop learns from the labels (default; the index answers when there are too few labels to learn from) or the recognition index",
    )
    p.add_argument("--min-confidence", type=float, default=None, help="calibrated confidence a learnt suggestion needs (default: the loop's bar, about 0.97)")
    p.add_argument("--min-margin", type=float, default=None, help="with --using index: margin (score minus the label's typical score) needed (default: the index's high-precision threshold)")
    p.add_argument("--all", action="store_true", help="consider every unlabelled point, not only those `corral map --update` placed")


def _run_suggest(args: argparse.Namespace) -> int:
    from corral.pipeline.presuggest import suggest_any

    if args.using == "index" and args.min_confidence is not None:
        raise ValueError("--min-confidence is the learnt model's threshold; with --using index give --min-margin")
    if args.using == "learnt" and args.min_margin is not None:
        raise ValueError("--min-margin is the index's threshold; add --using index, or give --min-confidence")
    threshold = args.min_margin if args.using == "index" else args.min_confidence
    res, note = suggest_any(workspace=args.workspace, map_name=args.map, using=args.using, threshold=threshold, include_all=args.all)
    if not args.quiet:
        if note:
            sys.stderr.write(note + "\n")
        what = "confidence" if res.using == "learnt model" else "margin"
        top = ", ".join(f"{k} {v}" for k, v in sorted(res.by_label.items(), key=lambda kv: -kv[1])[:10])
        sys.stderr.write(f"map {res.map}: {res.suggested} of {res.candidates} new items have a suggestion from the {res.using} ({what} >= {res.threshold:.3f}); {res.left} left for curators\n")
        if res.held_back_as_new:
            sys.stderr.write(
                f"  {res.held_back_as_new} more were sure enough but lie in a group with no labelled item of their label"
                " (most likely of a label nobody has named, or a look-alike of one): left for curators\n"
            )
        if top:
            sys.stderr.write(f"  {top}\n  review them in the viewer (accept or reject by label)\n")
    emit(res.summary())
    return 0


def add_recognize_only_args(p: argparse.ArgumentParser) -> None:
    """Options of ``corral serve --recognize-only`` (added to ``corral serve``)."""
    g = p.add_argument_group("recognise-only service")
    g.add_argument("--recognize-only", action="store_true", help="serve only /api/recognize from a published index (needs --from or --workspace)")
    g.add_argument("--from", dest="source", default=None, help="s3://bucket/prefix or a local published folder; newer versions are loaded as they are published")
    g.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for --from s3://...")
    g.add_argument("--users", default=None, metavar="DIR", help="folder with users.json for tokens and roles (default: the workspace's when it has one, else no sign-in)")
    g.add_argument("--reload-interval", type=float, default=10.0, help="seconds between checks for a newer version (default 10; 0: never)")
    g.add_argument("--weights", default=None, help="weight file or folder of the index's embedder")
    g.add_argument("--device", default="auto", help="device for the embedder: auto, cpu, cuda or cuda:N")
    g.add_argument("--max-batch", type=int, default=32, help="most images embedded together (default 32)")


def run_recognize_only(args: argparse.Namespace) -> int:
    """``corral serve --recognize-only``: the recognition service alone."""
    from corral.api.recognize_app import create_recognize_app
    from corral.storage.index_source import open_source

    spec = args.source or args.workspace
    if not spec:
        raise CliError("--recognize-only needs --from s3://bucket/prefix (or a local published folder, or --workspace DIR)")
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: expected 1 to 65535")
    users = args.users
    if users is None and args.workspace and (Path(args.workspace) / "users.json").is_file():
        users = args.workspace
    source = open_source(spec, endpoint_url=args.endpoint_url)
    app = create_recognize_app(source, users_dir=users, weights=args.weights, device=args.device, reload_interval_s=args.reload_interval, max_batch=args.max_batch)
    if users is None:
        sys.stderr.write("corral: recognise-only service without sign-in (pass --users DIR with a users.json to require tokens)\n")
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/api/recognize"
    emit({"url": url, "source": source.description, "recognize_only": True, "sign_in": users is not None})
    from corral.api.server import serve

    serve(app, host=args.host, port=args.port, log_level=args.log_level, trusted_proxies=args.trusted_proxy)
    return 0


register("index", "build, update or inspect the FAISS recognition index", _add_index, _run_index)
register("recognize", "name image files with the index (label or unknown, with scores)", _add_recognize, _run_recognize)
register("suggest", "propose labels for a map's new items: the sure predictions of the model learnt from the labels (or of the recognition index)", _add_suggest, _run_suggest)
