"""Back-off for failed sign-ins, so that passwords cannot be guessed at speed.

Failures are counted under three keys, each with its own allowance before it backs off:

- the **client address** (20 failures): one machine spraying guesses over many names;
- the **user name** (5 failures): many machines guessing one person's password;
- the **browser** that signed in as that user before (5 failures): a cookie set at each good
  sign-in marks the browser as the user's own.

Past its allowance a key waits 1 s after the next failure, then 2, 4, ... up to
``max_wait_s`` (15 minutes); a sign-in that comes sooner is answered 429 with ``Retry-After``,
without the password being checked (so a flood costs no hashing either). A key's count is
forgotten after ``forget_s`` without failures, and a good sign-in clears the count it was checked
under (the name's, or the browser's; never the address's).

The name's count does not apply to the user's own browsers: someone who guesses at an admin's
password from elsewhere locks out strangers, never the admin at their own browser, who only
waits on their own mistakes. Nor can anyone be locked out for longer than ``max_wait_s`` after
the guessing stops, and tokens (and ``corral users passwd`` on the server) always work.

The counts live in the server's memory: a restart, or another server process, starts afresh.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: the cookie that marks a browser that signed in as a user before
DEVICE_COOKIE = "corral_device"
#: browsers remembered per user, and keys counted at most (least recently failed dropped)
MAX_DEVICES, MAX_KEYS = 20, 100_000


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0


class SignInLimiter:
    """Counts failed sign-ins and says how long a new attempt must wait (see the module docstring)."""

    def __init__(
        self,
        *,
        per_address: int = 20,
        per_user: int = 5,
        per_device: int = 5,
        max_wait_s: float = 900.0,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.allow = {"addr": per_address, "user": per_user, "device": per_device}
        self.max_wait_s = float(max_wait_s)
        self.forget_s = float(forget_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()
        self._devices: dict[str, OrderedDict[str, None]] = {}  # user -> sha256 of their browsers' ids

    def is_known_device(self, name: str, device: str | None) -> bool:
        if not device or len(device) > 200:
            return False
        with self._lock:
            return _digest(device) in self._devices.get(name.lower(), ())

    # -- the checks -------------------------------------------------------------------------
    def wait_s(self, name: str, address: str, device: str | None = None) -> float:
        """Seconds before an attempt as ``name`` from ``address`` (and this browser) may be
        checked; 0 when it may be now."""
        now = self.clock()
        with self._lock:
            return max((self._wait(k, now) for k in self._keys_locked(name, address, device)), default=0.0)

    def failed(self, name: str, address: str, device: str | None = None) -> None:
        """Count a failed attempt."""
        now = self.clock()
        with self._lock:
            for key in self._keys_locked(name, address, device):
                c = self._counts.pop(key, None) or _Count()
                if now - c.last > self.forget_s:
                    c = _Count()
                c.failures += 1
                c.last = now
                self._counts[key] = c  # most recent last
            while len(self._counts) > MAX_KEYS:
                self._counts.popitem(last=False)

    def succeeded(self, name: str, address: str, device: str | None) -> str:
        """Clear the counts this attempt was checked under (the name's, or the known browser's;
        never the address's, which one good account must not reset); returns the browser's id to
        keep in :data:`DEVICE_COOKIE` (a new one when it had none)."""
        with self._lock:
            for key in self._keys_locked(name, address, device):
                if key[0] != "addr":
                    self._counts.pop(key, None)
            device = device if device and len(device) <= 200 else "crd_" + secrets.token_urlsafe(24)
            known = self._devices.setdefault(name.lower(), OrderedDict())
            known.pop(_digest(device), None)
            known[_digest(device)] = None
            while len(known) > MAX_DEVICES:
                known.popitem(last=False)
        return device

    def _keys_locked(self, name: str, address: str, device: str | None) -> list[tuple[str, str]]:
        if device and len(device) <= 200 and _digest(device) in self._devices.get(name.lower(), ()):
            return [("device", _digest(device))]
        return [("addr", address), ("user", name.lower())]

    def _wait(self, key: tuple[str, str], now: float) -> float:
        c = self._counts.get(key)
        if c is None or now - c.last > self.forget_s:
            return 0.0
        over = c.failures - self.allow[key[0]]
        if over <= 0:
            return 0.0
        return max(0.0, c.last + min(2.0 ** (over - 1), self.max_wait_s) - now)


def _digest(device: str) -> str:
    return hashlib.sha256(device.encode()).hexdigest()
