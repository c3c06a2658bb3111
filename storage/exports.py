"""Exports of a workspace's labels in the formats people expect.

=============  ==========================================================================
format         what ``out`` becomes
=============  ==========================================================================
parquet        one row per item file: id, uri, label, excluded_from, labelled_by, labelled_at,
               parent_id + bbox (crops), labels (own label plus, for a parent image, its crops')
csv / jsonl    the same rows as text (timestamps in ISO 8601 UTC; CSV lists as JSON arrays)
embeddings     Parquet: id, uri, label, embedding (the model and sidecar in the file metadata)
coco           COCO JSON of the detector's boxes as curators revised them, on their photos,
               category = the box's label (boxes nobody named are skipped)
labelme        a folder of LabelMe JSON files, one per photo: every box now, its label (empty
               when nobody named it); see :mod:`corral.storage.box_formats`
imagefolder    a folder per label holding the labelled images (copies, symlinks or hardlinks)
curators       per curator: actions, items per action, time per action, actions per hour
operations     the operation log: every request that changed something or failed, per user
               (CSV, or JSON lines when ``out`` ends in ``.jsonl``; see docs/accounts.md)
=============  ==========================================================================

Every export reads the label store at one version (:meth:`LabelStore.snapshot`) and writes to a
temporary name next to ``out`` that is renamed into place at the end, so ``out`` is either the
old export or the complete new one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from corral.storage.crops import parse_bbox, rolled_up_labels
from corral.storage.labels import LabelStore, StoreSnapshot
from corral.storage.workspace import Workspace, WorkspaceError

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "jsonl", "embeddings", "coco", "labelme", "imagefolder", "curators", "interactions", "passes", "operations")
LINK_MODES = ("copy", "symlink", "hardlink")
ITEM_EXPORT_COLUMNS = ("id", "uri", "label", "excluded_from", "labelled_by", "labelled_at", "parent_id", "bbox", "labels")


class ExportError(ValueError):
    """An export that cannot be made (bad format, nothing to export, ``out`` in the way)."""


@dataclass
class ExportResult:
    format: str
    out: str
    rows: int  # items (or annotations, images, curators) written
    labels: int  # labels present in the export
    labels_version: int  # the label store version exported
    bytes: int
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def summary(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["seconds"] = round(self.seconds, 3)
        return out


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def label_table(ws: Workspace, snap: StoreSnapshot) -> pa.Table:
    """The items export: every item file the workspace holds (skipped files left out) with its
    label state, plus labelled items the store knows that no embedding set lists (uri empty)."""
    items = ws.items()
    ids, uris, parents, boxes = [], [], [], []
    for i, uri, status, parent, bbox in zip(*(items.column(c).to_pylist() for c in ("id", "uri", "status", "parent_id", "bbox"))):
        if status in ("ok", "duplicate"):
            ids.append(i)
            uris.append(uri)
            parents.append(parent or None)
            boxes.append(parse_bbox(bbox) if parent else None)
    seen = set(ids)
    for i in sorted(set(snap.items) - seen):
        ids.append(i)
        uris.append("")
        parents.append(None)
        boxes.append(None)
    state = [snap.items.get(i) for i in ids]
    rolled = rolled_up_labels(items, {k: v[0] for k, v in snap.items.items()})
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "uri": pa.array(uris, pa.string()),
            "label": pa.array([s[0] if s else None for s in state], pa.string()),
            "excluded_from": pa.array([snap.exclusions.get(i, []) for i in ids], pa.list_(pa.string())),
            "labelled_by": pa.array([s[1] if s else None for s in state], pa.string()),
            "labelled_at": pa.array([int(s[2] * 1000) if s else None for s in state], pa.timestamp("ms", tz="UTC")),
            "parent_id": pa.array(parents, pa.string()),  # crops: the image they were cut from
            "bbox": pa.array(boxes, pa.list_(pa.float64(), 4)),  # crops: x, y, width, height in parent pixels
            "labels": pa.array([rolled.get(i, []) for i in ids], pa.list_(pa.string())),  # crop labels roll up to parents
        }
    )


# ------------------------------------------------------------------------------------------
# Writing to a temporary name, then into place


def _replace(tmp: Path, out: Path, *, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ExportError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        os.replace(tmp, out)


def _write_file(out: Path, write: Callable[[Path], object], *, overwrite: bool) -> int:
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _replace(tmp, out, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _text_rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for r in rows:
        at = r.get("labelled_at")
        r["labelled_at"] = None if at is None else iso(at.timestamp())
    return rows


# ------------------------------------------------------------------------------------------
# The formats


def _export_items(ws: Workspace, snap: StoreSnapshot, out: Path, fmt: str, overwrite: bool) -> tuple[int, int]:
    table = label_table(ws, snap)
    if fmt == "parquet":
        size = _write_file(out, lambda p: pq.write_table(table, p, compression="zstd"), overwrite=overwrite)
    elif fmt == "jsonl":

        def write(p: Path) -> None:
            with open(p, "w", encoding="utf-8") as fh:
                for r in _text_rows(table):
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")

        size = _write_file(out, write, overwrite=overwrite)
    else:

        def write(p: Path) -> None:
            with open(p, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=ITEM_EXPORT_COLUMNS)
                w.writeheader()
                for r in _text_rows(table):
                    r["excluded_from"] = json.dumps(r["excluded_from"], ensure_ascii=False) if r["excluded_from"] else ""
                    r["bbox"] = json.dumps(r["bbox"]) if r["bbox"] else ""
                    r["labels"] = json.dumps(r["labels"], ensure_ascii=False) if r["labels"] else ""
                    w.writerow({k: "" if v is None else v for k, v in r.items()})

        size = _write_file(out, write, overwrite=overwrite)
    return table.num_rows, size


def _export_embeddings(ws: Workspace, snap: StoreSnapshot, out: Path, name: str | None, overwrite: bool) -> tuple[int, int]:
    es = ws.default_embedding_set(name)
    side = es.sidecar()
    listed = es.items()
    uri_of: dict[str, str] = {}
    for i, uri in zip(listed.column("id").to_pylist(), listed.column("uri").to_pylist()):
        uri_of.setdefault(i, uri)
    meta = {"model": side.get("model"), "dim": side.get("dim"), "dtype": side.get("dtype"), "weights_hash": side.get("weights_hash"), "embedding_set": es.name, "labels_version": snap.version}
    rows = 0

    def write(p: Path) -> None:
        nonlocal rows
        writer = None
        try:
            for emb, _items in es.iter_shards():
                if emb.num_rows == 0:
                    continue
                ids = emb.column("id").to_pylist()
                state = [snap.items.get(i) for i in ids]
                t = pa.table(
                    {
                        "id": emb.column("id"),
                        "uri": pa.array([uri_of.get(i, "") for i in ids], pa.string()),
                        "label": pa.array([s[0] if s else None for s in state], pa.string()),
                        "embedding": emb.column("embedding"),
                    }
                )
                t = t.replace_schema_metadata({"corral": json.dumps(meta), "corral.sidecar": json.dumps(side, default=str)})
                if writer is None:
                    writer = pq.ParquetWriter(p, t.schema, compression="zstd")
                writer.write_table(t)
                rows += t.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ExportError(f"embedding set {es.path} has no complete shards; finish the embed run first")

    size = _write_file(out, write, overwrite=overwrite)
    return rows, size


def _export_coco(ws: Workspace, snap: StoreSnapshot, out: Path, overwrite: bool, skipped: Counter, store: LabelStore) -> tuple[int, int]:
    """The boxes now (the detector's, after every revision in force) with their labels."""
    from corral.storage.box_formats import coco_doc, current_state

    state = current_state(ws, store.in_force("boxes"))
    if not state.photos:
        raise ExportError(f"workspace {ws.root} has no crop items (items with parent_id and bbox); run detection first, or export --format parquet")
    doc, skip = coco_doc(state, snap, title=f"Corral labels of {ws.root.name}")
    skipped.update(skip)
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode()
    return len(doc["annotations"]), _write_file(out, lambda p: p.write_bytes(body), overwrite=overwrite)


def _export_labelme(ws: Workspace, snap: StoreSnapshot, out: Path, overwrite: bool, store: LabelStore) -> tuple[int, int]:
    """A folder with one LabelMe JSON per photo (every box now; unnamed ones with an empty label)."""
    from corral.storage.box_formats import current_state, labelme_docs

    state = current_state(ws, store.in_force("boxes"))
    if not state.photos:
        raise ExportError(f"workspace {ws.root} has no crop items (items with parent_id and bbox); run detection first")
    docs = labelme_docs(state, {i: v[0] for i, v in snap.items.items()})
    size = 0

    def write(p: Path) -> None:
        nonlocal size
        p.mkdir()
        for name, doc in docs:
            body = json.dumps(doc, ensure_ascii=False, indent=1).encode()
            (p / name).write_bytes(body)
            size += len(body)

    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.rmdir()
        write(tmp)
        _replace(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(len(d["shapes"]) for _, d in docs), size


#: the longest folder name written, in UTF-8 bytes: file systems allow 255, and a label id may be added
MAX_FOLDER_BYTES = 200


def folder_name(label: str) -> str:
    """A folder name for a label: path separators and control characters become ``_``, and a name
    longer than :data:`MAX_FOLDER_BYTES` bytes (UTF-8) is cut at a character boundary."""
    cleaned = "".join("_" if ch in '/\\:*?"<>|' or ord(ch) < 32 else ch for ch in label).strip(" .")
    cut = cleaned.encode("utf-8", "surrogatepass")[:MAX_FOLDER_BYTES].decode("utf-8", "ignore").strip(" .")
    return cut or "_"


def _read_source(uri: str, endpoint_url: str | None) -> bytes:
    if uri.startswith("s3://"):
        from corral.storage import s3

        u = s3.S3Url.parse(uri)
        return s3.client(endpoint_url).get_object(Bucket=u.bucket, Key=u.key)["Body"].read()
    return Path(uri).read_bytes()


def _export_imagefolder(ws: Workspace, snap: StoreSnapshot, out: Path, mode: str, overwrite: bool, skipped: Counter, endpoint_url: str | None) -> tuple[int, int]:
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out")
    rows = ws.items().to_pylist()
    whole = {r["id"]: r for r in rows if r["status"] == "ok"}
    folders: dict[str, str] = {}
    taken: set[str] = {"classes.json"}  # the index written beside the folders
    for li in snap.labels:
        name = folder_name(li.name)
        if name.casefold() in taken:
            name = f"{name}-{li.id}"
        taken.add(name.casefold())
        folders[li.name] = name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    written = size = 0
    try:
        names: dict[str, set[str]] = {}
        for item_id, (label, _, _) in sorted(snap.items.items(), key=lambda kv: (whole.get(kv[0]) or {}).get("uri", "")):
            row = whole.get(item_id)
            if row is None:
                skipped["not_in_workspace"] += 1
                continue
            folder = tmp / folders[label]
            folder.mkdir(exist_ok=True)
            src = row["uri"]
            crop = bool(row["parent_id"] and row["bbox"])
            parent = whole.get(row["parent_id"]) if crop else None
            if crop and parent is None:
                skipped["parent_not_in_workspace"] += 1
                continue
            stem, suffix = (Path(parent["uri"]).stem, ".png") if parent else (Path(src).stem, Path(src).suffix)
            fname = f"{stem}-{item_id[:12]}{suffix}" if crop else f"{stem}{suffix}"
            used = names.setdefault(folder.name, set())
            if fname.casefold() in used:
                fname = f"{stem}-{item_id[:12]}{suffix}"
            used.add(fname.casefold())
            dest = folder / fname
            try:
                if parent is not None:
                    _write_crop(_read_source(parent["uri"], endpoint_url), json.loads(row["bbox"]), dest)
                elif mode == "copy":
                    dest.write_bytes(_read_source(src, endpoint_url))
                elif src.startswith("s3://"):
                    skipped["remote_needs_copy"] += 1
                    continue
                elif mode == "symlink":
                    os.symlink(os.path.abspath(src), dest)
                else:
                    os.link(src, dest)
            except FileNotFoundError:
                skipped["missing"] += 1
                continue
            except OSError as e:
                if mode == "hardlink" and e.errno == 18:  # EXDEV
                    raise ExportError(f"cannot hardlink {src} into {out}: different file systems; use --mode copy or symlink") from None
                skipped["unreadable"] += 1
                logger.warning("imagefolder: %s: %s", src, e)
                continue
            written += 1
            size += dest.lstat().st_size
        classes = {folders[li.name]: {"label": li.name, "id": li.id, "aliases": li.aliases} for li in snap.labels}
        (tmp / "classes.json").write_text(json.dumps(classes, ensure_ascii=False, indent=1) + "\n")
        _replace(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written, size


def _write_crop(data: bytes, bbox: list[float], dest: Path) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        x, y, w, h = (float(v) for v in bbox)
        im.crop((round(x), round(y), round(x + w), round(y + h))).save(dest, format="PNG")


def _export_curators(store: LabelStore, out: Path, overwrite: bool) -> tuple[int, int]:
    stats = store.curator_stats()
    for s in stats:
        s["first_at"], s["last_at"] = iso(s["first_at"]), iso(s["last_at"])
    if out.suffix.lower() == ".json":
        body = (json.dumps(stats, indent=1) + "\n").encode()
    else:
        buf = io.StringIO()
        cols = list(stats[0]) if stats else ["user", "actions"]
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows([{k: "" if v is None else v for k, v in s.items()} for s in stats])
        body = buf.getvalue().encode()
    return len(stats), _write_file(out, lambda p: p.write_bytes(body), overwrite=overwrite)


def _export_interactions(ws: Workspace, out: Path, overwrite: bool, *, passes: bool = False) -> tuple[int, int]:
    """Every review page's per-tile byproducts, one row per tile; or with ``passes`` every proposal
    a curator passed over, one row per pass (CSV, or JSON lines for .jsonl)."""
    from corral.storage.interactions import FILE_NAME, PASS_COLUMNS, ROW_COLUMNS, InteractionStore

    rows: list[dict] = []
    if (ws.root / FILE_NAME).is_file():
        with InteractionStore.open(ws) as store:
            rows = store.pass_rows() if passes else store.rows()
    if out.suffix.lower() == ".jsonl":
        body = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(PASS_COLUMNS if passes else ROW_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows([{k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else ("" if v is None else v) for k, v in r.items()} for r in rows])
        body = buf.getvalue().encode()
    return len(rows), _write_file(out, lambda p: p.write_bytes(body), overwrite=overwrite)


def _export_operations(ws: Workspace, out: Path, overwrite: bool) -> tuple[int, int]:
    """The operation log, one row per logged request, oldest first (CSV, or JSON lines for .jsonl)."""
    from corral.storage.oplog import COLUMNS, FILE_NAME, SQLiteOperationLog

    jsonl = out.suffix.lower() == ".jsonl"
    rows = 0

    def write(p: Path) -> None:
        nonlocal rows
        log = SQLiteOperationLog(ws.root / FILE_NAME) if (ws.root / FILE_NAME).is_file() else None
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = None if jsonl else csv.DictWriter(fh, fieldnames=list(COLUMNS))
            if w is not None:
                w.writeheader()
            try:
                for op in log.iter_all() if log is not None else ():
                    row = {k: iso(op.at) if k == "at" else getattr(op, k) for k in COLUMNS}
                    if w is None:
                        fh.write(json.dumps(row) + "\n")
                    else:
                        w.writerow({k: "" if v is None else v for k, v in row.items()})
                    rows += 1
            finally:
                if log is not None:
                    log.close()

    size = _write_file(out, write, overwrite=overwrite)
    return rows, size


def export(
    workspace: str | os.PathLike[str] | Workspace,
    *,
    format: str,
    out: str | os.PathLike[str],
    embeddings: str | None = None,
    mode: str = "copy",
    overwrite: bool = False,
    endpoint_url: str | None = None,
    store: LabelStore | None = None,
) -> ExportResult:
    """Export a workspace's labels (see the module docstring for the formats).

    Args:
        workspace: the workspace folder.
        format: one of :data:`FORMATS`.
        out: the file (or, for ``imagefolder``, the folder) to write.
        embeddings: embedding set for ``embeddings`` (default: the only / newest one).
        mode: ``imagefolder`` only: ``copy`` (default), ``symlink`` or ``hardlink``.
        overwrite: replace ``out`` when it exists.
        endpoint_url: S3-compatible endpoint for s3:// images (``imagefolder``).
        store: an open label store (default: the workspace's).
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if mode not in LINK_MODES:
        raise ExportError(f"mode={mode!r}: expected one of {', '.join(LINK_MODES)}")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not ws.root.is_dir():
        raise WorkspaceError(f"workspace {ws.root} does not exist; run `corral embed SOURCE --workspace {ws.root}` first")
    out = Path(out).expanduser().resolve()
    inside = (ws.embeddings_dir, ws.maps_dir, ws.index_dir, ws.cache_dir)
    if out in (ws.root, ws.labels_db, *inside) or any(d in out.parents for d in inside):
        raise ExportError(f"--out {out} would overwrite part of the workspace; write the export elsewhere")
    t0 = time.perf_counter()
    own = store is None
    store = store or LabelStore.open(ws)
    skipped: Counter = Counter()
    try:
        snap = store.snapshot()
        if format in ("parquet", "csv", "jsonl"):
            rows, size = _export_items(ws, snap, out, format, overwrite)
        elif format == "embeddings":
            rows, size = _export_embeddings(ws, snap, out, embeddings, overwrite)
        elif format == "coco":
            rows, size = _export_coco(ws, snap, out, overwrite, skipped, store)
        elif format == "labelme":
            rows, size = _export_labelme(ws, snap, out, overwrite, store)
        elif format == "imagefolder":
            rows, size = _export_imagefolder(ws, snap, out, mode, overwrite, skipped, endpoint_url)
        elif format in ("interactions", "passes"):
            rows, size = _export_interactions(ws, out, overwrite, passes=format == "passes")
        elif format == "operations":
            rows, size = _export_operations(ws, out, overwrite)
        else:
            rows, size = _export_curators(store, out, overwrite)
    finally:
        if own:
            store.close()
    res = ExportResult(format, str(out), rows, len(snap.labels), snap.version, size, time.perf_counter() - t0, dict(skipped))
    logger.info("exported %s: %d rows, %d labels, %d bytes to %s%s", format, rows, res.labels, size, out, f" (skipped {dict(skipped)})" if skipped else "")
    return res
