"""Keeping freed memory for reuse while a batch stage runs.

A model's activations are freed and asked for again on every batch. glibc hands blocks larger
than its mmap threshold (128 KiB at first, rising to at most 32 MiB) straight back to the system
and maps fresh ones for the next batch, and the kernel zeroes every page of those on first touch:
in the embed stage on a 2-core CPU that was a third of EfficientNet-Lite0's CPU time, all of it
in the kernel. :func:`reuse_freed_memory` keeps freed blocks in the heap while a stage runs, then
puts glibc's starting thresholds back and returns the free memory to the system. Where the C
library is not glibc (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and glibc's starting values for them.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_START = 128 * 1024
#: Blocks up to this size come from (and go back to) the heap while a stage runs; larger ones are
#: still mapped on their own, so one huge request does not pin that much memory in the heap.
KEEP_UP_TO = 1 << 30

_lock = threading.Lock()
_active = 0


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """glibc, or None where the C library has no ``mallopt`` and ``malloc_trim``."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim")):
        return None
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.mallopt.restype = ctypes.c_int
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    lib.malloc_trim.restype = ctypes.c_int
    return lib


def release_free_memory() -> bool:
    """Give the memory the C allocator keeps free back to the system (``malloc_trim(0)``); False
    where the C library cannot."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def _set(lib: Any, mmap_threshold: int, trim_threshold: int) -> bool:
    return bool(lib.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(lib.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, freed blocks up to :data:`KEEP_UP_TO` stay in the heap for reuse; the
    value is whether that could be arranged (False without glibc). Blocks may nest and run in
    several threads at once: the last one to leave restores the thresholds and trims the heap."""
    global _active
    lib = _libc()
    if lib is None:
        yield False
        return
    with _lock:
        ok = _active > 0 or _set(lib, KEEP_UP_TO, KEEP_UP_TO)
        if ok:
            _active += 1
    try:
        yield ok
    finally:
        if ok:
            with _lock:
                _active -= 1
                if _active == 0:
                    _set(lib, _GLIBC_START, _GLIBC_START)
                    lib.malloc_trim(0)
