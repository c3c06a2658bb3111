"""What every benchmark ends with: peak memory figures and the one JSON line."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), MiB, one decimal."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def emit_result(result: Any, out: str | None = None) -> str:
    """Print ``result`` as the last stdout line (JSON) and, with ``out``, write it there too."""
    line = json.dumps(result, default=float)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(line + "\n")
    print(line, flush=True)
    return line
