"""At most one event per key per period: how often a refusal is worth a log line.

Pure apart from the clock, which is injected: a flood of refused requests becomes one
short line per reason per minute, each saying how many it stands for, while the exact
counts live in a metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    last: float  # when the last line for this key was let through
    pending: int  # events since then, not yet reported


class PerKeyRateLimiter:
    """`allow(key)` answers the number of events this line stands for (itself and those
    held back since the previous line for `key`), or None while `period` seconds have not
    passed since that line."""

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic):
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, key: str) -> int | None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(last=now, pending=0)
            return 1
        window.pending += 1
        # A clock that steps back counts as no time passed, never as a new window.
        if now - window.last < self.period:
            return None
        count, window.last, window.pending = window.pending, now, 0
        return count
