"""Waiting in tests: on a signal when the code has one (``await enforcer.flush()``,
``HeadWatcher.connected``, ``gw.mqtt_connected``, a process's own output), else with ``eventually()``,
the one polling helper. Neither asserts how long anything took: timing figures belong in bench/."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["enrolled_at_broker", "eventually", "wait_until"]


async def eventually(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` (plain or async) until it holds or ``timeout`` passes; -> its last value."""

    async def holds() -> bool:
        value = predicate()
        return bool(await value if inspect.isawaitable(value) else value)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await holds():
            return True
        await asyncio.sleep(interval)
    return await holds()


async def enrolled_at_broker(enforcer: Any, device_hex: str, timeout: float = 15.0) -> None:
    """Wait until the device's broker account is written (the gateway follows its index) and live
    (``enforcer.flush()``: the broker has reloaded); then a connect succeeds at the first try."""
    assert await eventually(lambda: device_hex in enforcer.password_file.read_text(), timeout), device_hex
    await enforcer.flush()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """``eventually`` for threads (the paho agent tests): raises AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
