"""Which gateway to try next, and after how long.

Strategy: gateways are tried in the configured order. A failed attempt (no answer in time, or a
REJECT) moves on to the next gateway at once; only when a whole round has failed does the agent wait,
with the backoff schedule, before starting the next round. A success resets both, and the agent keeps
the gateway that answered (it does not fall back to the first one while a session is good).
"""

from __future__ import annotations

from collections.abc import Sequence

from .backoff import Backoff

__all__ = ["GatewayRotation"]


class GatewayRotation:
    def __init__(self, gateways: Sequence[str], backoff: Backoff) -> None:
        if not gateways:
            raise ValueError("at least one gateway is needed")
        self.gateways = tuple(gateways)
        self.backoff = backoff
        self._index = 0
        self._failed_in_round = 0

    @property
    def current(self) -> str:
        return self.gateways[self._index]

    def failed(self) -> float:
        """The current gateway failed -> the delay before trying ``current`` (now the next one)."""
        self._index = (self._index + 1) % len(self.gateways)
        self._failed_in_round += 1
        if self._failed_in_round < len(self.gateways):
            return 0.0
        self._failed_in_round = 0
        return self.backoff.next_delay()

    def succeeded(self) -> None:
        self._failed_in_round = 0
        self.backoff.reset()
