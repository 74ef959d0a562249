"""Backend errors are translated into the package's own at the boundary; bugs keep their type and
traceback (``ledger_bridge.ledger._translated``)."""

from __future__ import annotations

import sqlite3

import pytest
import requests
from web3.exceptions import Web3RPCError

from ledger_bridge import EthereumTesterBackend, Ledger
from ledger_bridge.errors import LedgerError, LedgerUnavailable
from ledger_bridge.ledger import _translated

pytestmark = pytest.mark.asyncio


def _raise(exc: BaseException):
    def work():
        raise exc

    return work


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (requests.ConnectionError("refused"), LedgerUnavailable),
        (ConnectionRefusedError(111, "refused"), LedgerUnavailable),
        (TimeoutError(), LedgerUnavailable),
        (sqlite3.OperationalError("database is locked"), LedgerError),
        (Web3RPCError("nonce too low"), LedgerError),
    ],
)
async def test_backend_errors_become_ledger_errors(exc, kind):
    with pytest.raises(kind) as info:
        _translated(_raise(exc), "op")
    assert type(info.value) is not type(exc)


@pytest.mark.parametrize("exc", [ZeroDivisionError(), KeyError("x"), AttributeError("y"), TypeError("z")])
async def test_bugs_surface_with_their_own_type(exc):
    with pytest.raises(type(exc)) as info:
        _translated(_raise(exc), "op")
    assert info.value is exc and info.traceback  # the original exception, traceback intact


async def test_a_bug_inside_a_ledger_call_is_not_called_unavailable():
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        with pytest.raises(ZeroDivisionError):
            await ledger._run(lambda: 1 / 0, context="bug")
        assert await ledger._run(lambda: 2, context="fine") == 2


async def test_a_cancellation_is_never_swallowed_by_a_ledger_call():
    """A task cancelled while its ledger call completes ends cancelled. Python 3.11's ``wait_for`` returns
    the call's result instead when both happen at once, so a loop cancelled in its ledger call went on
    forever (the console's index sync: stopping the console hung, seen in CI under load)."""
    import asyncio
    import threading

    from tests.waiting import swallowed_cancels

    async with Ledger(backend=EthereumTesterBackend()) as ledger:

        async def completed() -> asyncio.Task[int]:
            returned = threading.Event()

            def work() -> int:
                returned.set()
                return 42

            task = asyncio.create_task(ledger._run(work, context="race"))
            while not returned.is_set():  # the call completes on the ledger's thread
                await asyncio.sleep(0)
            return task

        cancelled, swallowed = await swallowed_cancels(completed)
        assert cancelled > 0 and swallowed == []
