"""Choosing where to compute, and saying why."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def pick_device(requested: str | None = "auto") -> tuple[str, str]:
    """``(device, reason)``: CUDA when present and not declined, else the CPU.

    ``requested`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA on a machine
    without it is an error rather than a silent fall-back.
    """
    import torch

    req = (requested or "auto").lower()
    if req == "auto":
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return "cuda", f"auto: CUDA available ({name})"
        return "cpu", f"auto: no CUDA device; CPU with {torch.get_num_threads()} threads"
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto")
        return req, "requested"
    if req == "cpu":
        return "cpu", "requested"
    raise ValueError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
