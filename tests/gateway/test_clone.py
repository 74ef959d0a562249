"""Clone detection end to end: the copy that is behind answers the gateway's probe, which raises a clone
alert (metric, audit, on chain) and quarantines the device; a replayed HELLO never raises one."""

from __future__ import annotations

import asyncio

import pytest

from device_agent.core import events
from gateway.mqtt import MqttConnectError
from gateway.settings import DefenceSettings, ProtocolSettings
from tests.gateway.helpers import eventually
from tests.gateway.stack import site, start_gateway, stop_gateway
from tests.waiting import enrolled_at_broker

pytestmark = pytest.mark.asyncio

FAST_PROBES = {"protocol": ProtocolSettings(proof_timeout=0.3, session_lifetime=600)}
# the replays below are the device's own messages: give it room under its per-device rate limit
ROOMY = {**FAST_PROBES, "defence": DefenceSettings(device_burst=20)}


async def test_replayed_hello_is_probed_and_never_raises_a_clone_alert(tmp_path):
    async with site(tmp_path, n_devices=1, gateway_settings=ROOMY) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        captured_hello = dev.sent_messages[-2]
        for _ in range(3):
            dev.replay(dev.up, captured_hello)
        # each copy ends as a replay (refused at once, or probed and left unanswered): never a session
        assert await eventually(lambda: gw.metrics.get("rejected", "replay") == 3, 5), dict(
            gw.metrics.counters
        )
        assert gw.devices.role.pending == 0
        assert gw.metrics.get("clone_detected") == 0 and gw.metrics.get("authenticated") == 1
        assert await s.ledger.clone_alert_count(dev.device_id) == 0
        assert '"event":"clone_detected"' not in (gw.settings.state_dir / "audit.log").read_text()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        await dev.close()


async def test_clone_that_is_behind_is_detected_reported_and_cut_off(tmp_path):
    async with site(tmp_path, n_devices=1, gateway_settings=FAST_PROBES) as s:
        gw = s.gateways["gw-a"]
        original, clone = s.sim(0), s.sim(0)  # the same identity and the same counter state
        did = original.device_id
        await original.connect()
        for _ in range(2):
            assert isinstance(await original.authenticate(), events.Authenticated)
        await original.close()  # the broker lets one connection per device id: they take turns
        await clone.connect()
        result = await clone.authenticate()  # counter 1 <= floor 2: a probe, which the clone can answer
        assert isinstance(result, events.Rejected) and result.reason == "clone", result
        assert gw.metrics.get("clone_detected") == 1
        assert did not in gw.traffic.sessions and not gw.devices.entries[did].active
        assert await eventually(lambda: '"event":"clone_detected"' in (
            gw.settings.state_dir / "audit.log").read_text())
        # reported on chain by the gateway's account
        assert await eventually(lambda: s.ledger.clone_alert_count(did), 10)
        assert await s.ledger.clone_alert_count(did) == 1
        # quarantine: cut off at the broker, and neither copy is let back in
        await eventually(lambda: clone.client.closed.done(), 5)
        assert clone.client.closed.done()
        with pytest.raises(MqttConnectError):
            await original.connect(timeout=3)
        # locally too: a HELLO under a fresh counter is refused while the device is quarantined
        assert gw.devices.role.receive(did, original.sent_messages[0], 0.0)[1][0].reason == "not_active"


async def test_quarantine_survives_a_gateway_restart_until_the_owner_acts(tmp_path):
    async with site(tmp_path, n_devices=1, gateway_settings=FAST_PROBES) as s:
        gw = s.gateways["gw-a"]
        original, clone = s.sim(0), s.sim(0)
        did = original.device_id
        await original.connect()
        for _ in range(2):
            assert isinstance(await original.authenticate(), events.Authenticated)
        await original.close()
        await clone.connect()
        assert getattr(await clone.authenticate(), "reason", None) == "clone"
        await asyncio.wait_for(asyncio.shield(clone.client.closed), 5)
        enforcer = gw._enforcer
        await stop_gateway(s, "gw-a")
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer, **dict(FAST_PROBES))
        # a restart is not the owner's word: the device stays quarantined, at the broker and locally
        assert not gw.devices.entries[did].active
        assert did.hex() not in {e.device_id for e in gw.devices.enrollments()}
        with pytest.raises(MqttConnectError):
            await original.connect(timeout=3)
        # the owner suspends the device (and, having dealt with the copy, reactivates it): served again
        await s.actors["owner"].suspend(did)
        assert await eventually(lambda: did not in gw.devices.entries)
        await s.actors["owner"].activate(did)
        assert await eventually(lambda: did in gw.devices.entries and gw.devices.entries[did].active)
        await enrolled_at_broker(s.enforcer, did.hex())  # the broker takes it back (a batched reload)
        await original.connect(timeout=3)
        assert isinstance(await original.authenticate(), events.Authenticated)
        await original.close()
