"""Versioned publishing of a workspace to S3, and pulling it back.

Layout under ``s3://bucket/prefix``::

    LATEST                               the newest complete version id (text), written last
    versions/<version>/manifest.json     counts, models and the sha256 of every file; written
                                         after every other file of the version
    versions/<version>/labels.parquet    items with their label state (see corral.storage.exports)
    versions/<version>/labels.json       the label objects (id, name, aliases, count, ...)
    versions/<version>/labels.sqlite     the label store with its full history
    versions/<version>/embeddings/<set>/ embeddings.json + part-NNNNN.parquet + part-NNNNN.items.parquet
    versions/<version>/index/...         every file of the workspace's FAISS index, when one exists

A version folder is never changed once its manifest exists, and ``LATEST`` moves only after the
manifest is written, so a reader that follows ``LATEST`` sees a complete version or the previous
one. Several publishers may run at once: the manifest is created with ``If-None-Match: *`` and
``LATEST`` is moved with ``If-Match`` on the ETag just read, so it only ever moves forward (to the
highest version id) and no publisher overwrites another's pointer unseen (see ``_move_latest``). A publish that fails part way (the server went away) leaves ``LATEST`` alone; rerunning it
resumes the same version and uploads only what is missing. A pulled version is a workspace:
``Workspace(dest)`` reads its embeddings, index and labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.parquet as pq

from corral.storage import s3 as s3util
from corral.storage.exports import label_table
from corral.storage.labels import LabelStore
from corral.storage.workspace import Workspace, WorkspaceError, atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "corral-publish/1"
MIN_PART = 5 << 20  # S3's smallest multipart part
Progress = Callable[[int], None]
#: Error codes a retry cannot fix.
_FINAL = ("NoSuchBucket", "NoSuchKey", "404", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidBucketName")
#: A conditional write lost to another writer (S3 answers 409 to two conditional writes at once).
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
#: A server that does not take If-Match / If-None-Match on PUT.
_UNSUPPORTED = ("NotImplemented", "501")
#: Reads and conditional writes of LATEST before a publish gives up on a pointer that keeps moving.
POINTER_ATTEMPTS = 10


class PublishError(RuntimeError):
    """A publish or pull that could not finish (unreachable server, damaged copy, ...)."""


@dataclass
class PublishResult:
    url: str
    version: str
    files: int
    bytes: int
    seconds: float
    uploaded: int  # files sent by this run
    reused: int  # files a failed earlier run had already sent
    labels_version: int
    latest: str = ""  # the version LATEST names afterwards: this one, or a newer one another publisher wrote

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "url": self.url,
            "uploaded": self.uploaded,
            "reused": self.reused,
            "labels_version": self.labels_version,
            "latest": self.latest,
        }


@dataclass
class PullResult:
    url: str
    version: str
    dest: str
    files: int
    bytes: int
    seconds: float
    downloaded: int
    reused: int  # files already in dest with the right checksum
    verified: int  # files whose sha256 was checked
    removed: list[str] = field(default_factory=list)  # files of the previously pulled version not in this one

    def summary(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["seconds"] = round(self.seconds, 3)
        return out


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _key(url: s3util.S3Url, *parts: str) -> str:
    return "/".join(p.strip("/") for p in (url.key, *parts) if p.strip("/"))


def _retry(what: str, fn: Callable[[], Any], *, retries: int, backoff_s: float) -> Any:
    """Run ``fn``; on failure wait and try again, ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:  # botocore raises many unrelated types for a lost connection
            if _is_client_error(e, _FINAL) or attempt == retries:
                raise PublishError(f"{what} failed after {attempt + 1} attempt(s): {type(e).__name__}: {e}") from None
            delay = backoff_s * (2**attempt)
            logger.warning("%s failed (%s: %s); retrying in %.1fs", what, type(e).__name__, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_client_error(e: Exception, codes: tuple[str, ...]) -> bool:
    resp = getattr(e, "response", None)
    return isinstance(resp, dict) and resp.get("Error", {}).get("Code") in codes


# ------------------------------------------------------------------------------------------
# Publish


def _sources(ws: Workspace, embeddings: list[str] | None) -> tuple[list[tuple[str, Path]], dict[str, Any]]:
    """(relative key, local file) of every embedding and index file to publish, plus model info."""
    sets = [ws.default_embedding_set(n) for n in embeddings] if embeddings else ws.embedding_sets()
    files: list[tuple[str, Path]] = []
    models: dict[str, Any] = {}
    for es in sets:
        side = es.sidecar()
        shards = es.complete_shards()
        files.append((f"embeddings/{es.name}/{es.SIDECAR}", es.sidecar_path))
        count = 0
        for i in shards:
            emb, items = es.shard_paths(i)
            files += [(f"embeddings/{es.name}/{emb.name}", emb), (f"embeddings/{es.name}/{items.name}", items)]
            count += pq.ParquetFile(emb).metadata.num_rows
        models[es.name] = {"model": side.get("model"), "weights_hash": side.get("weights_hash"), "dim": side.get("dim"), "dtype": side.get("dtype"), "vectors": count, "shards": len(shards)}
    if ws.index_dir.is_dir():
        for p in sorted(ws.index_dir.rglob("*")):
            rel = p.relative_to(ws.index_dir)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):  # temp files of atomic writes
                files.append((f"index/{rel.as_posix()}", p))
    return files, models


def _stage_labels(ws: Workspace, store: LabelStore, stage: Path) -> tuple[int, dict[str, int]]:
    """labels.sqlite, labels.parquet and labels.json of ONE store version, into ``stage``."""
    stage.mkdir(parents=True, exist_ok=True)
    db = store.backup(stage / "labels.sqlite")
    copy = LabelStore(db)  # read the copy, so the three files agree even while curators work
    try:
        snap = copy.snapshot()
    finally:
        copy.close()
    conn = sqlite3.connect(str(db))
    try:  # one self-contained file: a reader of the published copy needs no -wal beside it
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    pq.write_table(label_table(ws, snap), stage / "labels.parquet", compression="zstd")
    labels = [{"id": li.id, "name": li.name, "aliases": li.aliases, "count": li.count, "created_by": li.created_by, "created_at": li.created_at} for li in snap.labels]
    (stage / "labels.json").write_text(json.dumps({"labels_version": snap.version, "labels": labels}, ensure_ascii=False, indent=1) + "\n")
    counts = {"labels": len(snap.labels), "labelled_items": len(snap.items), "excluded_items": len(snap.exclusions), "events": snap.events}
    return snap.version, counts


def publish(
    workspace: str | os.PathLike[str] | Workspace,
    url: str,
    *,
    endpoint_url: str | None = None,
    embeddings: list[str] | None = None,
    part_size: int = 16 << 20,
    concurrency: int = 4,
    retries: int = 4,
    backoff_s: float = 1.0,
    max_attempts: int = 5,
    progress: Progress | None = None,
) -> PublishResult:
    """Upload a new version of the workspace to ``url`` (``s3://bucket/prefix``), then point
    ``LATEST`` at it.

    Args:
        workspace: the workspace folder.
        url: where the versions live.
        endpoint_url: an S3-compatible endpoint (else the usual AWS settings).
        embeddings: names of the embedding sets to include (default: all).
        part_size: multipart part size in bytes (>= 5 MiB); larger files go up in parts.
        concurrency: parts in flight per file.
        retries: extra attempts per file after a failure, with exponential backoff.
        backoff_s: the first wait between attempts.
        max_attempts: botocore's own attempts per request.
        progress: called with the number of bytes sent, as they are sent.
    """
    u = s3util.S3Url.parse(url)
    if part_size < MIN_PART:
        raise ValueError(f"part_size={part_size}: S3 parts must be at least {MIN_PART} bytes (5 MiB)")
    for name, v, lo in (("concurrency", concurrency, 1), ("retries", retries, 0), ("max_attempts", max_attempts, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}={v!r}: expected a whole number >= {lo}")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.root.is_dir():
        raise WorkspaceError(f"workspace {ws.root} does not exist")
    t0 = time.perf_counter()
    sources, models = _sources(ws, embeddings)
    if not models:
        raise WorkspaceError(f"no embeddings in {ws.root}; run `corral embed SOURCE --workspace {ws.root}` first")
    store = LabelStore.open(ws)
    try:
        version, stage, manifest = _prepare(ws, store, u, sources, models)
    finally:
        store.close()
    client = s3util.client(endpoint_url, max_attempts=max_attempts)
    _check_bucket(client, u.bucket, endpoint_url, retries=retries, backoff_s=backoff_s)
    _abort_stale_uploads(client, u, version)
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=concurrency)
    local = {rel: path for rel, path in sources} | {n: stage / n for n in ("labels.json", "labels.parquet", "labels.sqlite")}
    uploaded = reused = 0
    for entry in manifest["files"]:
        key = _key(u, "versions", version, entry["path"])
        if _already_there(client, u.bucket, key, entry):
            reused += 1
            if progress:
                progress(entry["bytes"])
            continue
        path = local[entry["path"]]
        if path.stat().st_size != entry["bytes"]:
            raise PublishError(f"{path} changed while publishing ({entry['bytes']} -> {path.stat().st_size} bytes); rerun to publish a fresh version")

        def upload(path: Path = path, key: str = key, entry: dict[str, Any] = entry) -> Any:
            return client.upload_file(str(path), u.bucket, key, ExtraArgs={"Metadata": {"sha256": entry["sha256"]}}, Config=cfg, Callback=progress)

        _retry(
            f"uploading {entry['path']} to s3://{u.bucket}/{key}",
            upload,
            retries=retries,
            backoff_s=backoff_s,
        )
        uploaded += 1
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    mkey = _key(u, "versions", version, "manifest.json")
    put = dict(Bucket=u.bucket, Key=mkey, Body=body, ContentType="application/json", Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    created = _conditional_put(client, "writing manifest.json", retries=retries, backoff_s=backoff_s, IfNoneMatch="*", **put)
    if not created:  # there already: this run's own earlier write (a rerun after LATEST failed), or a clash
        there = _get(client, u.bucket, mkey, f"s3://{u.bucket}/{mkey} vanished while publishing", retries, backoff_s)
        if there != body:
            (ws.cache_dir / "publish" / "pending.json").unlink(missing_ok=True)  # the rerun makes a fresh version
            raise PublishError(f"version {version} at {url} already has a different manifest (a published version is never changed); rerun to publish a fresh version")
    _check_complete(client, u, version, manifest, retries=retries, backoff_s=backoff_s)
    latest = _move_latest(client, u, version, retries=retries, backoff_s=backoff_s)
    shutil.rmtree(stage, ignore_errors=True)
    (ws.cache_dir / "publish" / "pending.json").unlink(missing_ok=True)
    total = sum(f["bytes"] for f in manifest["files"]) + len(body)
    res = PublishResult(f"s3://{u.bucket}/{_key(u, 'versions', version)}/", version, len(manifest["files"]) + 1, total, time.perf_counter() - t0, uploaded, reused, manifest["labels_version"], latest)
    logger.info("published version %s to s3://%s/%s: %d files, %d bytes (%d uploaded, %d already there)", version, u.bucket, u.key, res.files, total, uploaded, reused)
    return res


def _prepare(ws: Workspace, store: LabelStore, u: s3util.S3Url, sources: list[tuple[str, Path]], models: dict[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    """The version to upload: the unfinished one from a failed run of the same publish when
    nothing changed since, else a new one with freshly staged label files."""
    root = ws.cache_dir / "publish"
    pending_path = root / "pending.json"
    fingerprint = hashlib.sha256(json.dumps([str(u), store.version(), [(rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in sources]]).encode()).hexdigest()
    if pending_path.exists():
        try:
            pending = json.loads(pending_path.read_text())
        except ValueError:
            pending = {}
        stage = root / str(pending.get("version", "-"))
        if pending.get("fingerprint") == fingerprint and (stage / "manifest.json").exists():
            logger.info("resuming the unfinished publish of version %s", pending["version"])
            return pending["version"], stage, json.loads((stage / "manifest.json").read_text())
        shutil.rmtree(stage, ignore_errors=True)
    now = datetime.now(timezone.utc)
    # ids sort in publish order (LATEST only moves to a larger one), so they carry microseconds:
    # two publishes within one second must not be ordered by their hashes
    version = now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + fingerprint[:8]
    stage = root / version
    labels_version, counts = _stage_labels(ws, store, stage)
    files = []
    staged = [(name, stage / name) for name in ("labels.json", "labels.parquet", "labels.sqlite")]
    for rel, path in staged + sources:
        files.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    manifest = {
        "format": FORMAT,
        "version": version,
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "labels_version": labels_version,
        "counts": {**counts, "vectors": sum(m["vectors"] for m in models.values()), "files": len(files) + 1},
        "embeddings": models,
        "index": sorted(rel for rel, _ in sources if rel.startswith("index/")),
        "files": files,
    }
    atomic_write_json(stage / "manifest.json", manifest)
    atomic_write_json(pending_path, {"version": version, "fingerprint": fingerprint, "url": str(u)})
    return version, stage, manifest


def _read_pointer(client: Any, bucket: str, key: str, *, retries: int, backoff_s: float) -> tuple[str | None, str | None]:
    """(the version ``LATEST`` names, its ETag), or (None, None) where there is no ``LATEST`` yet."""

    def fetch() -> tuple[str | None, str | None]:
        try:
            got = client.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            if _is_client_error(e, ("NoSuchKey", "404")):
                return None, None
            raise
        return got["Body"].read().decode().strip(), got.get("ETag")

    result: tuple[str | None, str | None] = _retry(f"reading s3://{bucket}/{key}", fetch, retries=retries, backoff_s=backoff_s)
    return result


def _conditional_put(client: Any, what: str, *, retries: int, backoff_s: float, **request: Any) -> bool:
    """``put_object`` with its If-Match / If-None-Match; False when the condition failed (another
    writer got there first, or our own earlier attempt did). On a server that refuses the
    headers as unsupported (501) the write is made unconditionally, with a warning."""

    def put() -> bool:
        try:
            client.put_object(**request)
        except Exception as e:
            if _is_client_error(e, _CONFLICT):
                return False
            if "IfMatch" in request and _is_client_error(e, ("NoSuchKey", "404")):  # moto's answer when the object is gone
                return False
            if not _is_client_error(e, _UNSUPPORTED):
                raise
            logger.warning("%s: the server does not take conditional writes (%s); writing unconditionally, so publishers running at once may race", what, e)
            client.put_object(**{k: v for k, v in request.items() if k not in ("IfMatch", "IfNoneMatch")})
        return True

    done: bool = _retry(what, put, retries=retries, backoff_s=backoff_s)
    return done


def _move_latest(client: Any, u: s3util.S3Url, version: str, *, retries: int, backoff_s: float) -> str:
    """Point ``LATEST`` at ``version`` unless it names a newer one already; returns what it names.

    Read ``LATEST`` with its ETag, then write with ``If-Match: <etag>`` (``If-None-Match: *``
    when there is none yet). A 412 means another publisher moved it in between: read again and
    retry, at most ``POINTER_ATTEMPTS`` times. Version ids sort by time, so "newer" is the larger
    id, and a slow publisher of an older version never moves the pointer back. Each write is read
    back on the next round, which also catches, best effort, a server that accepts the headers
    but ignores them.
    """
    key = _key(u, "LATEST")
    for attempt in range(POINTER_ATTEMPTS):
        current, etag = _read_pointer(client, u.bucket, key, retries=retries, backoff_s=backoff_s)
        if current is not None and current >= version:
            if current > version:
                logger.info("LATEST already names %s, newer than %s; left as it is", current, version)
            return current
        condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": etag} if etag else {}
        request = dict(Bucket=u.bucket, Key=key, Body=(version + "\n").encode(), ContentType="text/plain", **condition)
        if not _conditional_put(client, "writing LATEST", retries=retries, backoff_s=backoff_s, **request):
            logger.info("LATEST changed while it was being moved to %s; reading it again", version)
            time.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))  # two losers do not retry in step
    raise PublishError(f"LATEST at s3://{u.bucket}/{key} kept changing over {POINTER_ATTEMPTS} attempts; version {version} is complete, rerun to point LATEST at it")


def _check_bucket(client: Any, bucket: str, endpoint_url: str | None, *, retries: int, backoff_s: float) -> None:
    try:
        _retry(f"checking bucket {bucket}", lambda: client.head_bucket(Bucket=bucket), retries=retries, backoff_s=backoff_s)
    except PublishError as e:
        if "(404)" in str(e) or "NoSuchBucket" in str(e):
            where = endpoint_url or os.environ.get("CORRAL_S3_ENDPOINT_URL") or "the default AWS endpoint"
            raise PublishError(f"bucket {bucket!r} does not exist at {where}; create it first (or check --endpoint-url)") from None
        raise


def _already_there(client: Any, bucket: str, key: str, entry: dict[str, Any]) -> bool:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return int(head.get("ContentLength", -1)) == entry["bytes"] and head.get("Metadata", {}).get("sha256") == entry["sha256"]


def _abort_stale_uploads(client: Any, u: s3util.S3Url, version: str) -> None:
    """Drop multipart uploads a failed run left under this version (they cost storage)."""
    prefix = _key(u, "versions", version) + "/"
    try:
        uploads = client.list_multipart_uploads(Bucket=u.bucket, Prefix=prefix).get("Uploads", [])
        for up in uploads:
            client.abort_multipart_upload(Bucket=u.bucket, Key=up["Key"], UploadId=up["UploadId"])
        if uploads:
            logger.info("aborted %d unfinished multipart upload(s) under %s", len(uploads), prefix)
    except Exception as e:  # best effort: a server without the call still gets a correct publish
        logger.debug("could not list multipart uploads under %s: %s", prefix, e)


def _check_complete(client: Any, u: s3util.S3Url, version: str, manifest: dict[str, Any], *, retries: int, backoff_s: float) -> None:
    prefix = _key(u, "versions", version) + "/"
    have = dict(_retry("listing the new version", lambda: s3util.list_objects(client, s3util.S3Url(u.bucket, prefix)), retries=retries, backoff_s=backoff_s))
    for f in manifest["files"]:
        if have.get(prefix + f["path"]) != f["bytes"]:
            raise PublishError(f"s3://{u.bucket}/{prefix}{f['path']} is missing or has the wrong size after upload; rerun to resume")


# ------------------------------------------------------------------------------------------
# Pull


def versions(url: str, *, endpoint_url: str | None = None) -> list[str]:
    """Complete versions (those with a manifest) under ``url``, oldest first."""
    u = s3util.S3Url.parse(url)
    client = s3util.client(endpoint_url)
    prefix = _key(u, "versions") + "/"
    keys = s3util.list_objects(client, s3util.S3Url(u.bucket, prefix))
    return sorted({k[len(prefix) :].split("/", 1)[0] for k, _ in keys if k.endswith("/manifest.json") and k.count("/") == prefix.count("/") + 1})


def pull(
    url: str,
    dest: str | os.PathLike[str],
    *,
    version: str | None = None,
    endpoint_url: str | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    progress: Progress | None = None,
) -> PullResult:
    """Fetch the version ``LATEST`` names (or ``version``) into ``dest`` and check every sha256.

    Files already in ``dest`` with the right checksum are kept; files of a previously pulled
    version that this one lacks are removed; ``dest/manifest.json`` is written last.
    """
    u = s3util.S3Url.parse(url)
    t0 = time.perf_counter()
    client = s3util.client(endpoint_url)
    if version is None:
        body = _get(client, u.bucket, _key(u, "LATEST"), f"no published version at {url} (no LATEST); run `corral publish` first", retries, backoff_s)
        version = body.decode().strip()
    if not version or "/" in version or version.startswith("."):
        raise PublishError(f"version {version!r} is not a version id")
    raw = _get(client, u.bucket, _key(u, "versions", version, "manifest.json"), f"version {version!r} is not published at {url}", retries, backoff_s)
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise PublishError(f"manifest of version {version} is not JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != version:
        raise PublishError(f"manifest of version {version} is not a {FORMAT} manifest for that version")
    out = Path(dest).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    for f in manifest["files"]:
        rel = PurePosixPath(f["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise PublishError(f"manifest of version {version} names an unsafe path {f['path']!r}; refusing to pull it")
    previous = _previous_files(out)
    downloaded = reused = 0
    for f in manifest["files"]:
        target = out / f["path"]
        if target.is_file() and target.stat().st_size == f["bytes"] and sha256_file(target) == f["sha256"]:
            reused += 1
            if progress:
                progress(f["bytes"])
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        key = _key(u, "versions", version, f["path"])

        def download(key: str = key, tmp: Path = tmp) -> Any:
            return client.download_file(u.bucket, key, str(tmp), Callback=progress)

        _retry(f"downloading s3://{u.bucket}/{key}", download, retries=retries, backoff_s=backoff_s)
        got = sha256_file(tmp)
        if got != f["sha256"] or tmp.stat().st_size != f["bytes"]:
            tmp.unlink(missing_ok=True)
            raise PublishError(f"checksum mismatch for {f['path']} in version {version}: expected sha256 {f['sha256']}, got {got}; the published copy is damaged")
        if target.suffix == ".sqlite":  # a WAL left by a reader of the old file must not replay onto the new one
            for side in ("-wal", "-shm"):
                target.with_name(target.name + side).unlink(missing_ok=True)
        os.replace(tmp, target)
        downloaded += 1
    removed = sorted(previous - {f["path"] for f in manifest["files"]})
    for gone in removed:
        (out / gone).unlink(missing_ok=True)
    atomic_write_bytes(out / "manifest.json", raw)
    total = sum(f["bytes"] for f in manifest["files"])
    res = PullResult(url, version, str(out), len(manifest["files"]), total, time.perf_counter() - t0, downloaded, reused, len(manifest["files"]), removed)
    logger.info("pulled version %s into %s: %d files (%d downloaded, %d already there), every sha256 checked", version, out, res.files, downloaded, reused)
    return res


def _previous_files(out: Path) -> set[str]:
    try:
        old = json.loads((out / "manifest.json").read_text())
        return {f["path"] for f in old.get("files", []) if ".." not in PurePosixPath(f["path"]).parts}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _get(client: Any, bucket: str, key: str, missing: str, retries: int, backoff_s: float) -> bytes:
    def fetch() -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:
            if _is_client_error(e, ("NoSuchKey", "404")):
                return None
            raise

    body = _retry(f"reading s3://{bucket}/{key}", fetch, retries=retries, backoff_s=backoff_s)
    if body is None:
        raise PublishError(missing)
    return body
