"""Bring existing labels or ground truth into the label store.

A label file is CSV, JSONL or Parquet with a ``label`` column and a column that names the item
(or boxes on photos: a COCO JSON file or LabelMe JSON files, :mod:`corral.storage.box_formats`):
``id`` (the item id), or ``uri`` / ``path`` (matched against the workspace's items; a relative
path is taken relative to the file's folder, as in manifests). Rows whose item the workspace does
not know are reported, not imported; a file that names the same item twice with different labels
uses the last row and counts the clash. The whole import is one undoable event.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.storage.box_formats import is_box_file, plan_box_import
from corral.storage.tables import read_table_rows
from corral.storage.label_names import name_key
from corral.storage.labels import LabelError, LabelStore, check_name
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")


@dataclass
class ImportReport:
    """What an import did (the CLI prints it as JSON)."""

    file: str
    rows: int  # rows read
    imported: int  # items given a label by the import (or already carrying it)
    labels: int  # distinct labels in the file
    labels_created: list[str]
    unknown: int  # rows whose item is not in the workspace
    unknown_examples: list[str] = field(default_factory=list)
    empty_label: int = 0  # rows without a label
    clashes: int = 0  # items named twice with different labels (the last row wins)
    kept_existing: int = 0  # items left with their own label (overwrite=False)
    event_id: int | None = None
    warnings: list[str] = field(default_factory=list)  # new names that look like other labels

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV, JSONL or Parquet file, as dicts."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LabelError(f"{path}: unsupported label file type {suffix or '(none)'!r}; use .csv, .jsonl or .parquet")
    if not path.is_file():
        raise LabelError(f"{path}: no such file")
    return read_table_rows(path, error=LabelError)


def _uri_index(ws: Workspace) -> dict[str, str]:
    items = ws.items()
    out: dict[str, str] = {}
    for i, uri, status in zip(items.column("id").to_pylist(), items.column("uri").to_pylist(), items.column("status").to_pylist()):
        if status in ("ok", "duplicate") and uri:
            out[uri] = i
    return out


def plan_import(path: str | os.PathLike[str], *, workspace: Workspace, known: set[str]) -> tuple[dict[str, str], ImportReport]:
    """Read a label file and map its rows to item ids: ``(assignments, report)``."""
    path = Path(path).expanduser()
    rows = read_rows(path)
    report = ImportReport(file=str(path), rows=len(rows), imported=0, labels=0, labels_created=[], unknown=0)
    if not rows:
        return {}, report
    cols = set().union(*(r.keys() for r in rows))
    key = next((k for k in ("id", "uri", "path") if k in cols), None)
    if key is None or "label" not in cols:
        raise LabelError(f"{path}: a label file needs a 'label' column and an 'id', 'uri' or 'path' column; it has {', '.join(sorted(cols))}")
    by_uri = _uri_index(workspace) if key != "id" else {}
    base = path.parent.resolve()
    assignments: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        raw = "" if row.get(key) is None else str(row.get(key)).strip()
        label = row.get("label")
        label = "" if label is None else str(label)
        if not label.strip():
            report.empty_label += 1
            continue
        if key == "id":
            item = raw if raw in known else None
        else:
            item = by_uri.get(raw)
            if item is None and raw and not raw.startswith("s3://"):
                local = Path(raw).expanduser()
                item = by_uri.get(str(local if local.is_absolute() else (base / local).resolve()))
        if item is None:
            report.unknown += 1
            if len(report.unknown_examples) < 10:
                report.unknown_examples.append(raw or f"(row {n}: empty {key})")
            continue
        try:
            label = check_name(label, f"label in row {n}")
        except LabelError as e:
            raise LabelError(f"{path}: {e}") from None
        if item in assignments and name_key(assignments[item]) != name_key(label):
            report.clashes += 1
        assignments[item] = label
    report.labels = len({name_key(v) for v in assignments.values()})
    return assignments, report


def import_labels(
    path: str | os.PathLike[str] | None,
    *,
    workspace: str | os.PathLike[str] | Workspace,
    user: str,
    overwrite: bool = True,
    strict: bool = False,
    store: LabelStore | None = None,
) -> ImportReport:
    """Import a label file (or, with ``path=None``, the labels the workspace's manifests carried).

    Args:
        path: CSV/JSONL/Parquet label file, or None for the items' own ``label`` column.
        workspace: the workspace whose items the rows refer to.
        user: who is importing (recorded on the event).
        overwrite: replace labels items already carry (default) or keep them.
        strict: fail, writing nothing, when any row names an unknown item.
        store: an open store to use (default: the workspace's).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    own = store is None
    store = store or LabelStore.open(ws)
    try:
        known = store.known_ids()
        if path is None:
            items = ws.items()
            assignments = {
                i: lab for i, lab, status in zip(items.column("id").to_pylist(), items.column("label").to_pylist(), items.column("status").to_pylist()) if status == "ok" and lab and lab.strip()
            }
            for i, lab in assignments.items():
                assignments[i] = check_name(lab, f"label of item {i}")
            report = ImportReport(file="(workspace manifests)", rows=len(assignments), imported=0, labels=len({name_key(v) for v in assignments.values()}), labels_created=[], unknown=0)
            source = "workspace"
        elif is_box_file(Path(path).expanduser()):  # COCO or LabelMe boxes (corral export --format coco / labelme)
            report = ImportReport(file=str(path), rows=0, imported=0, labels=0, labels_created=[], unknown=0)
            assignments = plan_box_import(Path(path).expanduser(), workspace=ws, revisions=store.in_force("boxes"), report=report)
            source = str(path)
        else:
            assignments, report = plan_import(path, workspace=ws, known=known)
            source = str(path)
        if strict and report.unknown:
            raise LabelError(f"{report.file}: {report.unknown:,} row(s) name items the workspace does not know (e.g. {', '.join(report.unknown_examples[:3])}); nothing imported")
        if not assignments:
            logger.warning("%s: nothing to import (%d rows, %d unknown, %d without a label)", report.file, report.rows, report.unknown, report.empty_label)
            return report
        res = store.import_labels(assignments, user=user, source=source, overwrite=overwrite)
        ev = store.events(since=res.event_id - 1, limit=1)[0]
        report.event_id = res.event_id
        report.labels_created = ev.payload.get("created", [])
        report.kept_existing = ev.payload.get("kept_existing", 0)
        report.imported = sum(ev.payload.get("counts", {}).values())
        report.warnings = list(res.warnings)
        logger.info("imported %d labels for %d items from %s (%d unknown)", report.labels, report.imported, report.file, report.unknown)
        return report
    finally:
        if own:
            store.close()
