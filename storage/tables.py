"""Reading the small tables users hand us (manifests, label files): CSV, JSONL or Parquet rows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_table_rows(path: Path, *, error: type[ValueError]) -> list[dict[str, Any]]:
    """Rows of a ``.csv``, ``.jsonl``/``.ndjson`` or Parquet file, as dicts.

    Any file that cannot be read or parsed raises ``error`` with the path (and line, for JSONL).
    """
    return list(iter_table_rows(path, error=error))


def iter_table_rows(path: Path, *, error: type[ValueError]) -> Iterator[dict[str, Any]]:
    """The rows of :func:`read_table_rows` one at a time, so a manifest of millions of rows is never
    held whole (Parquet is read a row group's batch at a time)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                yield from csv.DictReader(fh)
            return
        if suffix in (".jsonl", ".ndjson"):
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise error(f"{path}:{n}: not JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise error(f"{path}:{n}: each line must be a JSON object")
                    yield row
            return
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            yield from batch.to_pylist()
    except error:
        raise
    except Exception as e:
        raise error(f"{path}: cannot read ({type(e).__name__}: {e})") from None
