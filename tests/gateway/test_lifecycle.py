"""Ledger events while a session is live: suspension (and reactivation) and deauthorization of a
gateway (an epoch bump: every gateway's key for the old epoch is dead; the device re-authenticates
under the new epoch once the owner seals keys for it again)."""

from __future__ import annotations

import asyncio

import pytest

from device_agent.core import events, topics
from gateway.mqtt import MqttConnectError
from ledger_bridge.enrollment import sealed_grants
from ledger_bridge.index import onchain_gateway_id
from tests.gateway.helpers import eventually, verified_listener
from tests.gateway.stack import site
from tests.waiting import enrolled_at_broker

pytestmark = pytest.mark.asyncio


async def test_suspension_cuts_a_live_session_and_reactivation_restores_it(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        did = dev.device_id
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        listener, got = await verified_listener(s.broker.port, gw)
        dev.send_data("telemetry", b"before")
        assert await eventually(lambda: len(got) == 1)
        late = dev.session.seal(b"telemetry", b"after")  # sealed under the live session
        await s.actors["owner"].suspend(did)
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 5)
        assert did not in gw.traffic.sessions and did not in gw.devices.entries
        # data under the old session is no longer republished, whatever path it takes to the gateway
        gw.traffic.on_message(topics.data("gw-a", dev.hex, "telemetry").encode(), late)
        assert gw.metrics.get("data_dropped", "no_session") == 1
        with pytest.raises(MqttConnectError):
            await dev.connect(timeout=3)
        await s.actors["owner"].activate(did)
        await enrolled_at_broker(s.enforcer, dev.hex)
        await dev.connect(timeout=3)
        assert isinstance(await dev.authenticate(), events.Authenticated)
        dev.send_data("telemetry", b"again")
        assert await eventually(lambda: len(got) == 2)
        assert [p for _, p in got] == [b"before", b"again"]
        audit = (gw.settings.state_dir / "audit.log").read_text()
        assert audit.count('"event":"cut_off"') == 1
        await listener.close()
        await dev.close()


async def test_deauthorizing_a_gateway_bumps_the_epoch_for_every_gateway(tmp_path):
    async with site(tmp_path, n_devices=1, gateway_ids=("gw-a", "gw-b")) as s:
        a, b = s.gateways["gw-a"], s.gateways["gw-b"]
        dev = s.sim(0)
        did = dev.device_id
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert a.devices.entries[did].epoch == 0
        # the owner stops trusting gw-b: the epoch moves, so gw-a's key (epoch 0) is dead as well
        await s.actors["owner"].deauthorize_gateway(did, onchain_gateway_id(b"gw-b"))
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 5)
        assert await eventually(lambda: did not in a.devices.entries and did not in b.devices.entries)
        assert did not in a.traffic.sessions
        # the owner seals gw-a's key for the new epoch: gw-a serves the device again, gw-b never does
        boxes, commitments = sealed_grants([s.devices[0]], s.keys["gw-a"], 1)
        await s.actors["owner"].authorize_gateway(
            did, onchain_gateway_id(b"gw-a"), sealed_key=boxes[0], key_commitment=commitments[0]
        )
        assert await eventually(lambda: did in a.devices.entries)
        assert a.devices.entries[did].epoch == 1 and did not in b.devices.entries
        await enrolled_at_broker(s.enforcer, dev.hex)
        # the device still holds epoch 0: P_0 is refused at the broker, P_1 (probed at once) is taken,
        # and its HELLO goes under epoch 1; epoch 1 is committed by that handshake only
        await dev.connect(timeout=3)
        assert dev.epoch == 0 and dev.policy.login_epoch == 1
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert dev.epoch == 1 and dev.hellos[-1][0] == 1
        await dev.close()
        renewed = s.sim(0, epoch=1, counter=dev.counter)
        await renewed.connect()
        assert isinstance(await renewed.authenticate(), events.Authenticated)
        assert a.counters.floor(did, 1) == renewed.counter
        old_gw = s.sim(0, gateway_id="gw-b", epoch=1, counter=5)
        await renewed.close()
        await old_gw.connect()
        result = await old_gw.authenticate(timeout=2)
        assert isinstance(result, events.Rejected) and result.reason == "unknown_device", result
        await old_gw.close()
