"""Offline operation: with the ledger unreachable the gateway serves known devices from its identity
index for ``offline.max_staleness``, refuses unknown ones, says so on /readyz, and catches up (cut-offs
included) when the ledger returns. The index's clock is skewed to cross the bound without sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest

from device_agent.core import events, topics
from device_agent.core.device import DeviceRole
from device_agent.core.keys import gateway_key
from firmware_sim.device import SimDevice
from gateway.mqtt import MqttConnectError
from gateway.settings import LedgerSettings, OfflineSettings
from ledger_bridge.enrollment import ProvisionedDevice, onboard
from ledger_bridge.errors import LedgerUnavailable
from ledger_bridge.index import LedgerSource
from ledger_bridge.model import LedgerEvent
from tests.gateway.helpers import eventually
from tests.gateway.stack import FIRMWARE, POLICY, site, start_gateway, stop_gateway
from tests.waiting import enrolled_at_broker

pytestmark = pytest.mark.asyncio


class UnreachableLedger:
    """A ledger source whose node is down."""

    async def head(self) -> int:
        raise LedgerUnavailable("node down (test)")

    async def block_hash(self, number: int) -> bytes | None:
        raise LedgerUnavailable("node down (test)")

    async def events(self, from_block: int, to_block: int) -> Sequence[LedgerEvent]:
        raise LedgerUnavailable("node down (test)")


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


async def test_offline_serving_bound_and_catch_up(tmp_path):
    async with site(
        tmp_path, n_devices=2, gateway_settings={"offline": OfflineSettings(max_staleness=30)}
    ) as s:
        gw = s.gateways["gw-a"]
        assert gw.health is not None
        port = gw.health.port
        skew = [0.0]
        gw.index._clock = lambda: time.time() + skew[0]
        kept, revoked = s.sim(0), s.sim(1)
        for d in (kept, revoked):
            await d.connect()
        assert (await asyncio.to_thread(_readyz, port)) == (200, "ready\n")

        source, gw._source = gw._source, UnreachableLedger()
        assert await eventually(lambda: not gw.ledger_ok and gw.metrics.get("ledger_sync_errors") > 0)
        status, why = await asyncio.to_thread(_readyz, port)
        assert status == 200 and "ledger unreachable" in why
        # meanwhile on the ledger: one device is revoked and a new one onboarded; the gateway can't know
        await s.actors["owner"].revoke(revoked.device_id)
        newcomer = ProvisionedDevice.generate(model="diams-sensor", serial="SN-NEW", firmware_hash=FIRMWARE)
        await onboard(
            manufacturer=s.actors["manufacturer"],
            owner=s.actors["owner"],
            devices=[newcomer],
            gateways=[s.keys["gw-a"]],
            policy_id=POLICY,
        )
        # known devices keep authenticating from the index (the revoked one too: the bound is the price)
        for d in (kept, revoked):
            assert isinstance(await d.authenticate(), events.Authenticated)
        # unknown ones are refused: the broker has no account for it, and the gateway does not know it
        fresh = SimDevice(newcomer, gateway_id="gw-a", host="127.0.0.1", port=s.broker.port)
        with pytest.raises(MqttConnectError):
            await fresh.connect(timeout=3)
        key = gateway_key(newcomer.secret, newcomer.device_id, b"gw-a", 0, FIRMWARE)
        hello = DeviceRole(newcomer.device_id, b"gw-a", bytes(key), 0).hello(1, bytes(8))
        gw.traffic.on_message(topics.handshake_up("gw-a", newcomer.device_id.hex()).encode(), hello)
        assert gw.metrics.get("rejected", "unknown_device") == 1

        # past the staleness bound: every handshake is refused, and the gateway is not ready
        skew[0] = 31.0
        result = await kept.authenticate(timeout=1)
        assert isinstance(result, events.Rejected) and result.reason == "timeout"
        assert gw.metrics.get("handshake_refused", "index_stale") == 1
        status, why = await asyncio.to_thread(_readyz, port)
        assert status == 503 and "stale" in why
        assert kept.device_id in gw.traffic.sessions  # live sessions are not cut for staleness alone

        # the ledger returns: the index catches up, the revoked device is cut off, the newcomer served
        gw._source = source
        assert await eventually(lambda: gw.ledger_ok, 5)
        await asyncio.wait_for(asyncio.shield(revoked.client.closed), 5)
        assert revoked.device_id not in gw.devices.entries and revoked.device_id not in gw.traffic.sessions
        assert (await asyncio.to_thread(_readyz, port)) == (200, "ready\n")
        assert isinstance(await kept.authenticate(), events.Authenticated)
        assert await eventually(lambda: newcomer.device_id in gw.devices.entries)
        await enrolled_at_broker(s.enforcer, fresh.hex)  # enrolment at the broker follows the index
        await fresh.connect(timeout=3)
        assert isinstance(await fresh.authenticate(), events.Authenticated)
        for d in (kept, fresh):
            await d.close()


async def test_gateway_starting_without_a_ledger_serves_known_devices_from_its_index(tmp_path, monkeypatch):
    async with site(tmp_path, n_devices=1) as s:
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        enforcer = s.gateways["gw-a"]._enforcer
        await stop_gateway(s, "gw-a")
        # the gateway reboots while the node is down: it serves from the index it kept on disk
        monkeypatch.setattr("gateway.service.LedgerSource", lambda ledger: UnreachableLedger())
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer)
        assert not gw.ledger_ok and dev.device_id in gw.devices.entries
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert gw.devices.entries[dev.device_id].counter == 2
        # the node comes back: the gateway catches up by itself
        await s.actors["owner"].suspend(dev.device_id)
        gw._source = LedgerSource(s.ledger)
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 5)
        assert gw.ledger_ok and dev.device_id not in gw.devices.entries


class _NodeDown:
    """``build_ledger()``'s result while the node is down (opening it fails as RpcBackend's does), and
    the site's open ledger once ``up`` is set (entered, never closed: the site owns it)."""

    def __init__(self, ledger) -> None:
        self.ledger, self.up, self.attempts = ledger, False, 0

    def __call__(self) -> _NodeDown:
        return self

    async def __aenter__(self):
        self.attempts += 1
        if not self.up:
            raise LedgerUnavailable("no EVM node answering at http://127.0.0.1:9 (test)")
        return self.ledger

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_gateway_booting_while_the_ledger_node_is_down_serves_then_catches_up(tmp_path):
    """``run`` opens the ledger itself: with the node down, it boots from the index within the bound."""
    from gateway.service import Gateway, GatewayError

    async with site(tmp_path, n_devices=2) as s:
        kept, revoked = s.sim(0), s.sim(1)
        for d in (kept, revoked):
            await d.connect()
            assert isinstance(await d.authenticate(), events.Authenticated)
        old = s.gateways["gw-a"]
        settings, enforcer = old.settings, old._enforcer
        await stop_gateway(s, "gw-a")
        await s.actors["owner"].revoke(revoked.device_id)  # while the gateway is down

        node = _NodeDown(s.ledger)
        gw = Gateway(settings, actor=s.actors["account-gw-a"], enforcer=enforcer,
                     broker_password=s.actors["broker-gw-a"])
        gw._build_ledger = node  # type: ignore[method-assign]
        await gw.__aenter__()
        ready = asyncio.Event()
        task = asyncio.create_task(gw.serve(ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 15)
            assert not gw.ledger_ok and node.attempts >= 1
            assert "ledger unreachable" in gw.readiness()[1]
            assert isinstance(await kept.authenticate(), events.Authenticated)  # from the index
            node.up = True  # the node returns: the gateway opens it, catches up and cuts off
            assert await eventually(lambda: gw.ledger_ok, 15)
            assert await eventually(lambda: revoked.device_id not in gw.devices.entries, 5)
            await asyncio.wait_for(asyncio.shield(revoked.client.closed), 5)
            assert isinstance(await kept.authenticate(), events.Authenticated)
        finally:
            gw.stop()
            await asyncio.wait_for(task, 10)
            await gw.__aexit__(None, None, None)

        # beyond the staleness bound, an index is no ground to serve from: the gateway says why. The
        # index's clock is the gateway's wall clock, which the test moves on a minute (no sleep).
        now = time.time()
        stale = Gateway(dataclasses.replace(settings, offline=OfflineSettings(max_staleness=30.0)),
                        actor=s.actors["account-gw-a"], enforcer=enforcer, broker_password="x" * 32,
                        wall_clock=lambda: now)
        stale._build_ledger = _NodeDown(s.ledger)  # type: ignore[method-assign]
        now += 60
        beyond = r"ledger is unreachable .* 6\d s old, beyond offline.max_staleness"
        with pytest.raises(GatewayError, match=beyond):
            await stale.__aenter__()
        await kept.close()


class _SlowOverWideRanges:
    """A ledger source that answers a range of at most ``fast`` blocks at once and takes far longer than
    the gateway's sync timeout for anything wider (large batches on a slow node or a busy machine)."""

    def __init__(self, inner: LedgerSource, fast: int) -> None:
        self.inner, self.fast, self.ranges = inner, fast, []

    async def head(self) -> int:
        return await self.inner.head()

    async def block_hash(self, number: int) -> bytes | None:
        return await self.inner.block_hash(number)

    async def events(self, from_block: int, to_block: int) -> Sequence[LedgerEvent]:
        self.ranges.append(to_block - from_block + 1)
        if to_block - from_block + 1 > self.fast:
            await asyncio.sleep(3600)
        return await self.inner.events(from_block, to_block)


async def test_a_sync_that_times_out_is_retried_over_fewer_blocks_until_the_fleet_is_served(
    tmp_path, monkeypatch
):
    """A gateway whose every sync of the whole history times out used to serve nothing for ever; now a
    timed-out sync is retried over fewer blocks, and the index catches up batch by batch."""
    async with site(tmp_path, n_devices=4) as s:
        enforcer = s.gateways["gw-a"]._enforcer
        await stop_gateway(s, "gw-a")
        (tmp_path / "gw-a" / "index.sqlite").unlink()  # a fresh gateway: the whole history to read
        sources: list[_SlowOverWideRanges] = []

        def slow(ledger):
            sources.append(_SlowOverWideRanges(LedgerSource(ledger), fast=2))
            return sources[-1]

        monkeypatch.setattr("gateway.service.LedgerSource", slow)
        settings = LedgerSettings(
            mode="rpc",
            url="http://unused",
            poll_interval=0.05,
            anchor_interval=3600,
            deployed_block=s.ledger.channel.deployed_block,
            sync_timeout=0.3,
        )
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer, ledger=settings)
        served = lambda: all(d.device_id in gw.devices.entries for d in s.devices)  # noqa: E731
        assert await eventually(served, 60), (sources[-1].ranges, len(gw.devices.entries))
        assert max(sources[-1].ranges) > 2 and sources[-1].ranges[-1] <= 2  # shrank, then went on
        await enrolled_at_broker(enforcer, s.devices[0].device_id.hex())
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        await dev.close()
