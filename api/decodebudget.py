"""How much memory the server may spend decoding images at once.

A PNG of 9,000 x 9,000 pixels is a few hundred kilobytes on the wire and 650 MB once decoded, so
the number of requests says nothing about the memory they take. Every decode the server does
(thumbnails, a crop's parent image, recognition uploads) first reads the image's size from its
header, then holds that many bytes of one :class:`DecodeBudget` while it decodes. Decodes that
would pass the budget wait their turn, first come first served; one that waits longer than
``wait_s``, or finds too many already waiting, gets 503 with ``Retry-After``. An image bigger than
the whole budget decodes alone.

C allocators keep freed memory for reuse (glibc keeps whole arenas), so a server that decoded a
few huge images once would hold that memory for good; after a large decode the free memory is
handed back to the system where the C library can do that.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Iterator

from corral.api.errors import ApiError
from corral.pipeline.heap import release_free_memory

logger = logging.getLogger(__name__)


class DecodeBusy(ApiError):
    """The server is decoding as many images as its memory budget allows (503, try again soon)."""

    status = 503


class DecodeBudget:
    """A weighted, first-come-first-served semaphore over bytes of decoded pixels.

    Args:
        capacity: bytes that decodes in flight may hold together.
        wait_s: longest a decode waits for room before its request gets 503.
        max_waiting: decodes that may wait at once; more get 503 at once, so waiting requests
            cannot take every worker thread the other routes need.
        trim_above: after a decode of at least this many bytes, free memory goes back to the system.
    """

    def __init__(self, capacity: int, *, wait_s: float = 30.0, max_waiting: int = 24, trim_above: int = 16 << 20):
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: must be at least 1 byte")
        if wait_s <= 0:
            raise ValueError(f"wait_s={wait_s}: must be > 0")
        if max_waiting < 0:
            raise ValueError(f"max_waiting={max_waiting}: must be >= 0")
        self.capacity = capacity
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self.trim_above = trim_above
        self.in_use = 0
        self.refused = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @property
    def retry_after_s(self) -> int:
        """What a refused request is told to wait before it tries again."""
        return max(1, math.ceil(self.wait_s / 4))

    def _busy(self, why: str) -> DecodeBusy:
        self.refused += 1
        retry = self.retry_after_s
        return DecodeBusy(f"the server is decoding as many images as its memory allows ({why}); try again in {retry} s", headers={"Retry-After": str(retry)})

    @contextlib.contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        """Hold ``cost`` bytes (at most the whole budget) while the block runs; waits for room, or
        raises :class:`DecodeBusy`."""
        cost = min(max(int(cost), 1), self.capacity)
        with self._cond:
            if self._queue or self.in_use + cost > self.capacity:
                if len(self._queue) >= self.max_waiting:
                    raise self._busy(f"{len(self._queue)} decodes are waiting")
                ticket = object()
                self._queue.append(ticket)
                try:
                    ok = self._cond.wait_for(lambda: self._queue[0] is ticket and self.in_use + cost <= self.capacity, timeout=self.wait_s)
                finally:
                    self._queue.remove(ticket)
                    self._cond.notify_all()  # the next in line may fit now
                if not ok:
                    raise self._busy(f"waited {self.wait_s:g} s")
            self.in_use += cost
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= cost
                self._cond.notify_all()
            if cost >= self.trim_above:
                release_free_memory()
