"""While a stage runs, freed memory is kept for the next batch; afterwards it goes back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from corral.pipeline import heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or heap._libc() is None, reason="needs glibc's mallopt (Linux)")


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _touch_and_free(mib: int) -> None:
    block = np.ones(mib * 2**20, dtype=np.uint8)  # written, so its pages are resident
    del block


def test_freed_blocks_stay_for_reuse_inside_and_go_back_after():
    _touch_and_free(64)
    base = _rss_mib()
    _touch_and_free(64)
    assert _rss_mib() - base < 16, "outside a stage a freed 64 MiB block goes straight back"
    with heap.reuse_freed_memory() as kept:
        assert kept
        _touch_and_free(64)
        held = _rss_mib() - base
        assert held > 48, f"inside a stage the freed block should stay in the heap (held {held:.0f} MiB)"
        _touch_and_free(64)  # the same memory again, not another 64 MiB
        assert _rss_mib() - base < held + 16
    assert _rss_mib() - base < 16, "after the stage the kept memory is returned"


def test_nested_stages_keep_memory_until_the_last_one_ends():
    base = _rss_mib()
    with heap.reuse_freed_memory(), heap.reuse_freed_memory():
        pass
    with heap.reuse_freed_memory():
        with heap.reuse_freed_memory():
            pass
        _touch_and_free(64)  # the outer stage still runs: kept
        assert _rss_mib() - base > 48
    assert _rss_mib() - base < 16
