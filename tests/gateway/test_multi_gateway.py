"""Three gateways on one broker, every device authorized for all three: one gateway crashes mid-fleet and
its devices fail over to another authorized gateway (counters per device-gateway pair, nothing shared)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from device_agent.core import events
from firmware_sim.device import SimDevice
from tests.gateway.helpers import eventually
from tests.gateway.stack import Site, site

pytestmark = pytest.mark.asyncio

GATEWAYS = ("gw-a", "gw-b", "gw-c")


async def _serve(s: Site, i: int, order: tuple[str, ...], attempt_timeout: float) -> SimDevice:
    """What a device's firmware does: try its gateways in order until one authenticates it."""
    for gid in order:
        dev = s.sim(i, gateway_id=gid)
        await dev.connect()
        if isinstance(await dev.authenticate(timeout=attempt_timeout), events.Authenticated):
            return dev
        await dev.close()
    raise AssertionError(f"device {i} found no gateway")


async def test_three_gateways_one_crashes_and_its_devices_fail_over(tmp_path):
    n = 9
    async with site(tmp_path, n_devices=n, gateway_ids=GATEWAYS) as s:
        home = {i: GATEWAYS[i % 3] for i in range(n)}
        devs = list(await asyncio.gather(*(_serve(s, i, (home[i],), 5.0) for i in range(n))))
        for gid in GATEWAYS:
            assert s.gateways[gid].metrics.get("authenticated") == 3
        # the fleet re-authenticates, and gw-b crashes in the middle of it: its socket drops as a dead
        # process's would (no DISCONNECT) and its tasks die without a graceful close
        gw_b = s.gateways["gw-b"]
        round2 = asyncio.gather(*(d.authenticate(timeout=2.0) for d in devs))
        # the crash point: the round has reached gw-b (a handshake pending there, or already done)
        assert await eventually(
            lambda: gw_b.devices.role.pending > 0 or gw_b.metrics.get("authenticated") > 3, 5, interval=0
        )
        crashed, task = s.gateways.pop("gw-b"), s.tasks.pop("gw-b")
        assert crashed.mqtt is not None
        crashed.mqtt.abort()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            for i, r in enumerate(await round2):
                if home[i] != "gw-b":  # the other gateways never noticed
                    assert isinstance(r, events.Authenticated), (i, r)
            # gw-b's devices notice that it stops answering (their next attempt times out) and move on
            orphans = [i for i in range(n) if home[i] == "gw-b"]
            for i in orphans:
                await devs[i].close()
            moved = await asyncio.gather(*(_serve(s, i, ("gw-b", "gw-c", "gw-a"), 1.0) for i in orphans))
            for i, dev in zip(orphans, moved, strict=True):
                devs[i] = dev
                assert dev.gateway_id == "gw-c" and dev.counter == 1  # a fresh counter for the new pair
            # every device is served again: data from all nine is verified and republished
            listener, got = await s.listener("gw-a")
            for d in devs:
                d.send_data("telemetry", d.hex.encode())
            assert await eventually(lambda: len(got) == n), [t for t, _ in got]
            assert sorted(p for _, p in got) == sorted(d.hex.encode() for d in devs)
            assert s.gateways["gw-c"].metrics.get("authenticated") == 6 + len(orphans)
            # no shared state: gw-c's floors for the moved devices start at their first counter with gw-c,
            # gw-b's own floors stay where the crash left them
            for i in orphans:
                did = s.devices[i].device_id
                assert s.gateways["gw-c"].counters.floor(did, 0) == 1
                assert crashed.counters.floor(did, 0) in (1, 2)  # its second round may have reached gw-b
            await listener.close()
        finally:
            for d in devs:
                await d.close()
            await crashed.__aexit__(None, None, None)
