"""``corral embed`` and ``corral models``."""

from __future__ import annotations

import argparse
import sys

from api.cli import emit, register


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a folder (recursive), a manifest (.csv/.jsonl/.parquet with a 'uri' column) or s3://bucket/prefix")
    p.add_argument("--workspace", "-w", required=True, help="workspace folder (created if missing)")
    p.add_argument("--model", default=None, help="embedder name (default timm:tf_efficientnet_lite0; see `corral models`)")
    p.add_argument("--weights", default=None, help="weight file or folder for the model (default: packaged weights or the Hugging Face cache)")
    p.add_argument("--random-weights", action="store_true", help="allow an untrained model when no weights are found (for testing only)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default 64 on CPU, 256 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="decode worker processes (default: all cores on CUDA, half on CPU)")
    p.add_argument("--shard-size", type=int, default=4096, help="items per output shard, the unit of resume (default 4096)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="vector type on disk (default float32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    p.add_argument("--gpu-decode", choices=("auto", "on", "off"), default="auto", help="decode JPEGs on the GPU with nvJPEG (default: on with CUDA)")
    p.add_argument("--max-pixels", type=int, default=None, help="skip images with more pixels than this (decompression bombs; default 89,478,485)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for s3:// sources (else the usual AWS settings)")
    p.add_argument("--name", default=None, help="embedding set name inside the workspace (default: from the model name)")


def _run_embed(args: argparse.Namespace) -> int:
    from pipeline.embed import EmbedConfig, embed
    from pipeline.registry import DEFAULT_MODEL

    cfg = EmbedConfig(
        model=args.model or DEFAULT_MODEL,
        weights=args.weights,
        random_weights=args.random_weights,
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
    )
    if args.max_pixels:
        cfg.max_pixels = args.max_pixels
    res = embed(args.source, workspace=args.workspace, config=cfg)
    if not args.quiet:
        t = res.timings
        skipped = ", ".join(f"{k} {v}" for k, v in res.skipped_by_reason.items()) or "none"
        rate = res.embedded / res.seconds if res.seconds else 0.0
        sys.stderr.write(
            f"embedded {res.embedded} of {res.items} items ({res.already_done} done earlier) with {res.model} "
            f"on {res.device} in {res.seconds:.1f}s ({rate:.1f} img/s); duplicates {res.duplicates}; skipped {res.skipped} ({skipped})\n"
            f"  decode {t.get('decode_worker_s', 0):.1f}s (summed over workers), waiting for decode {t.get('wait_s', 0):.1f}s, "
            f"infer {t.get('infer_s', 0):.1f}s, write {t.get('write_s', 0):.1f}s; embeddings in {res.embeddings}\n"
        )
        if res.skipped:
            sys.stderr.write(f"  the skipped files and reasons are listed in {args.workspace}/skipped.csv\n")
    emit(res.summary())
    return 0


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="a wildcard over timm names, e.g. 'vit_*'")


def _run_models(args: argparse.Namespace) -> int:
    from pipeline import registry, weights

    fams = registry.families()
    lines = [f"{name}: {fam.doc}" for name, fam in sorted(fams.items())]
    offline = sorted(f"timm:{a}" for a in weights.PACKAGED if weights._package_file(a) is not None)
    matches: list[str] = []
    if args.pattern:
        import fnmatch

        matches = [f"timm:{n}" for n in fams["timm"].names() if fnmatch.fnmatch(n, args.pattern)]
    if not args.quiet:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.write("weights installed offline: " + (", ".join(offline) or "none") + "\n")
        for m in matches[:200]:
            sys.stderr.write(m + "\n")
    emit({"families": sorted(fams), "offline": offline, "matches": matches})
    return 0


register("embed", "embed a folder, manifest or S3 prefix into a workspace", _add_embed, _run_embed)
register("models", "list embedder families and the models with weights installed offline", _add_models, _run_models)
