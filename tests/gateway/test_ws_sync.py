"""With ledger.ws_url, a revocation reaches the gateway at the next block, not the next poll."""

from __future__ import annotations

import asyncio
import time

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
            await asyncio.sleep(0.5)  # the watcher subscribes after the first sync
            t0 = time.monotonic()
            await s.actors["owner"].revoke(dev.device_id)
            await asyncio.wait_for(asyncio.shield(dev.client.closed), 10)
            # polling alone would have waited up to 60 s
            assert time.monotonic() - t0 < 10 and dev.device_id not in gw.devices.entries
