"""The DIAMS contracts on the embedded chain through the async Ledger: everything survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger_bridge import Ledger, Role, Signer
from ledger_bridge.embedded import EmbeddedBackend
from tests.ledger.helpers import device_id, registration

ETH = 10**18


async def _lifecycle_then_restart(path: Path) -> None:
    admin, manufacturer = Signer.generate(label="admin"), Signer.generate(label="manufacturer")
    devices = [device_id(n, tag=0xE1) for n in range(40)]
    async with Ledger(backend=EmbeddedBackend(path)) as ledger:
        for signer in (admin, manufacturer):
            await ledger.fund(signer.address, 10 * ETH)
        channel = await ledger.deploy(admin=admin)
        await ledger.actor(admin).grant_role(Role.MANUFACTURER, manufacturer.address)
        await ledger.actor(manufacturer).register_many([registration(dev) for dev in devices[:-1]])
        await ledger.actor(manufacturer).register_device(registration(devices[-1]))
        head = await ledger.block_number()
        before = {dev: await ledger.device(dev) for dev in (devices[0], devices[-1])}
        history = await ledger.history(devices[-1])
        assert history

    async with Ledger(backend=EmbeddedBackend(path)) as ledger:
        await ledger.attach(channel)
        assert await ledger.block_number() == head
        for dev, record in before.items():
            assert await ledger.device(dev) == record
        assert await ledger.history(devices[-1]) == history
        assert await ledger.has_role(Role.MANUFACTURER, manufacturer.address)
        assert len(await ledger.events()) >= len(devices)
        # and the chain goes on: the funded actors still hold their ether
        await ledger.actor(manufacturer).register_device(registration(device_id(99, tag=0xE1)))
        assert await ledger.block_number() == head + 1


@pytest.mark.asyncio
async def test_the_contracts_and_their_history_survive_a_restart(tmp_path: Path) -> None:
    await _lifecycle_then_restart(tmp_path / "chain.sqlite")
