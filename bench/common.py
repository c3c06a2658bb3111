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


def provenance() -> dict[str, Any]:
    """Where and when a result was measured: UTC date, the commit (``+dirty`` with local changes)
    and the machine (CPU count, CPU model, platform, 1-minute load when it started)."""
    import datetime
    import os
    import platform
    import subprocess

    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "device": {"kind": "cpu", "cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
    }


def emit_result(result: Any, out: str | None = None) -> str:
    """Print ``result`` as the last stdout line (JSON) and, with ``out``, write it there too."""
    line = json.dumps(result, default=float)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(line + "\n")
    print(line, flush=True)
    return line
