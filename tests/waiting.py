"""Waiting in tests: on a signal when the code has one (``await enforcer.flush()``,
``HeadWatcher.connected``, ``gw.mqtt_connected``, a process's own output), else with ``eventually()``,
the one polling helper. Neither asserts how long anything took: timing figures belong in bench/."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["enrolled_at_broker", "eventually", "swallowed_cancels", "wait_until"]


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


async def swallowed_cancels(
    completed: Callable[[], Awaitable[asyncio.Task[Any]]], spins: int = 6, rounds: int = 40
) -> tuple[int, list[Any]]:
    """Cancel tasks whose awaited call has just completed (``completed()`` starts one and returns it
    then), the cancel landing 0..``spins``-1 loop steps later, ``rounds`` times each -> (how many
    cancels reached a running task, the results of those that returned anyway: swallowed cancels).
    Python 3.11's ``asyncio.wait_for`` swallows some; ``asyncio.timeout`` none."""
    swallowed: list[Any] = []
    cancelled = 0
    for n in [s for s in range(spins) for _ in range(rounds)]:
        task = await completed()
        for _ in range(n):
            await asyncio.sleep(0)
        if not task.cancel():  # it had already returned: nothing to swallow
            await task
            continue
        cancelled += 1
        try:
            swallowed.append(await task)
        except asyncio.CancelledError:
            pass
    return cancelled, swallowed
