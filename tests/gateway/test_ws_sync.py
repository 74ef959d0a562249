"""With ledger.ws_url, a revocation reaches the gateway at the next block, not the next poll."""

from __future__ import annotations

import asyncio

import pytest

from device_agent.core import events
from gateway.settings import LedgerSettings
from ledger_bridge import RpcBackend
from ledger_bridge.anvil import AnvilNode, anvil_binary
from tests.conftest import require
from tests.gateway.stack import site


@pytest.mark.asyncio
async def test_block_notifications_wake_the_index(tmp_path):
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil)")
    with AnvilNode() as node:
        ledger = LedgerSettings(
            mode="rpc",
            url=node.url,
            ws_url=node.url.replace("http://", "ws://"),
            poll_interval=60.0,
            anchor_interval=3600,
        )
        async with site(
            tmp_path,
            n_devices=1,
            ledger_backend=RpcBackend(url=node.url, name="anvil"),
            gateway_settings={"ledger": ledger},
        ) as s:
            gw = s.gateways["gw-a"]
            dev = s.sim(0)
            await dev.connect()
            assert isinstance(await dev.authenticate(), events.Authenticated)
            assert gw.head_watcher is not None
            await asyncio.wait_for(gw.head_watcher.connected.wait(), 10)  # subscribed to new heads
            heads = gw.head_watcher.heads
            await s.actors["owner"].revoke(dev.device_id)
            # polling alone would wait up to 60 s: the cut-off within the timeout came from a new head
            await asyncio.wait_for(asyncio.shield(dev.client.closed), 30)
            assert gw.head_watcher.heads > heads and dev.device_id not in gw.devices.entries
