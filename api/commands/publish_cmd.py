"""``corral publish`` and ``corral pull``: versioned snapshots on S3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from corral.api.cli import CliError, emit, register


def _bar(enabled: bool, what: str) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=what, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)
    return bar.update, bar.close


def _add_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="s3://bucket/prefix; versions go under prefix/versions/, the pointer is prefix/LATEST")
    p.add_argument("--workspace", "-w", required=True, help="workspace folder")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else the usual AWS settings / CORRAL_S3_ENDPOINT_URL)")
    p.add_argument("--embeddings", action="append", default=None, help="embedding set to include (repeatable; default: all)")
    p.add_argument("--part-size", type=int, default=16, help="multipart part size in MiB (>= 5, default 16)")
    p.add_argument("--retries", type=int, default=4, help="extra attempts per file after a failure (default 4)")


def _run_publish(args: argparse.Namespace) -> int:
    from corral.storage.publish import PublishError, publish

    update, close = _bar(not args.quiet, "publish")
    try:
        res = publish(args.workspace, args.url, endpoint_url=args.endpoint_url, embeddings=args.embeddings, part_size=args.part_size << 20, retries=args.retries, progress=update)
    except PublishError as e:
        raise CliError(f"{e}; LATEST still names the previous version, rerun to resume") from None
    finally:
        close()
    if not args.quiet:
        sys.stderr.write(f"published version {res.version} ({res.files} files, {res.bytes / 2**20:.1f} MiB; {res.uploaded} uploaded, {res.reused} already there) to {res.url} in {res.seconds:.1f}s\n")
        if res.latest and res.latest != res.version:
            sys.stderr.write(f"LATEST names {res.latest}, a newer version another publisher wrote meanwhile; it was left there\n")
    emit(res.summary())
    return 0


def _add_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="s3://bucket/prefix that `corral publish` wrote to")
    p.add_argument("dest", help="folder to fetch into (it becomes a workspace)")
    p.add_argument("--version", default=None, help="a version id (default: the one LATEST names)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else the usual AWS settings / CORRAL_S3_ENDPOINT_URL)")
    p.add_argument("--retries", type=int, default=4, help="extra attempts per file after a failure (default 4)")


def _run_pull(args: argparse.Namespace) -> int:
    from corral.storage.publish import PublishError, pull

    update, close = _bar(not args.quiet, "pull")
    try:
        res = pull(args.url, args.dest, version=args.version, endpoint_url=args.endpoint_url, retries=args.retries, progress=update)
    except PublishError as e:
        raise CliError(str(e)) from None
    finally:
        close()
    if not args.quiet:
        sys.stderr.write(f"pulled version {res.version} into {res.dest}: {res.files} files ({res.downloaded} downloaded, {res.reused} already there), every sha256 checked, in {res.seconds:.1f}s\n")
    emit(res.summary())
    return 0


register("publish", "upload a new version (labels, embeddings, index, manifest) to S3, then move LATEST", _add_publish, _run_publish)
register("pull", "fetch the latest (or a named) published version and verify every checksum", _add_pull, _run_pull)
