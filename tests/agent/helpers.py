"""Running agents for the agent tests (``Device`` and ``running`` live in ``firmware_sim.agents``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_sim.agents import Device, running

__all__ = ["Device", "running", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
