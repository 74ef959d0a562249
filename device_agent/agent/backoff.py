"""Reconnect delays: exponential backoff with full jitter, capped.

Strategy: attempt n waits a uniform random time in [0, min(cap, base * 2**n)] ("full jitter", AWS
architecture blog 2015). After a broker restart a whole fleet reconnects spread over the window
instead of in synchronized waves, and the cap bounds how long one device stays away. The random
source is injected so the schedule is testable.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, *, base: float = 0.5, cap: float = 60.0,
                 uniform: Callable[[float, float], float] | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._uniform = uniform or _random.SystemRandom().uniform
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` (0-based) may wait."""
        return min(self.cap, self.base * float(2 ** min(attempt, 62)))

    def next_delay(self) -> float:
        delay = float(self._uniform(0.0, self.ceiling(self.attempt)))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
