"""Block notifications over WebSocket from a real node, and reconnection after the node returns."""

from __future__ import annotations

import asyncio

import pytest
from web3 import Web3

from ledger_bridge.anvil import AnvilNode, anvil_binary
from ledger_bridge.heads import HeadWatcher
from tests.conftest import require
from tests.waiting import eventually


@pytest.mark.asyncio
async def test_heads_arrive_and_the_watcher_survives_a_node_restart():
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil)")
    node = AnvilNode().start()
    seen: list[int] = []
    watcher = HeadWatcher(node.url.replace("http://", "ws://"), seen.append, reconnect_delay=0.1)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.connected.wait(), 10)
        Web3(Web3.HTTPProvider(node.url)).provider.make_request("evm_mine", [])
        assert await eventually(lambda: seen)
        assert seen == [1]
        node.stop()
        assert await eventually(lambda: not watcher.connected.is_set())
        node = AnvilNode(port=node.port).start()
        await asyncio.wait_for(watcher.connected.wait(), 10)
        Web3(Web3.HTTPProvider(node.url)).provider.make_request("evm_mine", [])
        assert await eventually(lambda: len(seen) == 2)
        assert seen == [1, 1]  # a fresh chain: its first block again
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        node.stop()


def test_only_websocket_urls():
    with pytest.raises(ValueError, match="ws://"):
        HeadWatcher("http://127.0.0.1:8545", print)
