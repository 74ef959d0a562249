"""The gateway daemon through faults: broker restart, gateway restart mid-handshake, malformed and
oversize messages on every subscribed topic, and a flood of bogus handshakes (real Mosquitto, real EVM)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from device_agent.core import events, topics
from device_agent.core.device import DeviceRole
from device_agent.core.keys import gateway_key
from gateway.mqtt import MqttClient, MqttConnectError
from gateway.settings import DefenceSettings
from tests.gateway.helpers import eventually, raw_device_client
from tests.gateway.stack import site, start_gateway, stop_gateway

pytestmark = pytest.mark.asyncio


def _level(topic: str, i: int, value: str) -> str:
    """``topic`` with level ``i`` replaced: malformed topics derived from well-formed ones."""
    parts = topic.split("/")
    parts[i] = value
    return "/".join(parts)


async def test_broker_restart_gateway_resubscribes_and_devices_reauthenticate(tmp_path):
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        devs = [s.sim(i) for i in range(2)]
        for d in devs:
            await d.connect()
            assert isinstance(await d.authenticate(), events.Authenticated)
        assert gw.metrics.get("mqtt_connects") == 1
        s.broker.restart()
        # the gateway notices the loss, reconnects and resubscribes by itself
        assert await eventually(
            lambda: gw.metrics.get("mqtt_connects") == 2 and gw.mqtt_connected.is_set(), 15
        ), dict(gw.metrics.counters)
        for d in devs:
            await asyncio.wait_for(asyncio.shield(d.client.closed), 5)
        listener, got = await s.listener()
        for d in devs:
            await d.connect()
            assert isinstance(await d.authenticate(), events.Authenticated)
            d.send_data("telemetry", d.hex.encode())
        assert await eventually(lambda: len(got) == 2), dict(gw.metrics.counters)
        assert sorted(p for _, p in got) == sorted(d.hex.encode() for d in devs)
        assert gw.metrics.get("authenticated") == 4
        # enforcement still works against the restarted broker: a revoked device is cut off
        await s.actors["owner"].revoke(devs[1].device_id)
        await asyncio.wait_for(asyncio.shield(devs[1].client.closed), 5)
        # and the gateway saw it gone in the broker's log (not just trusted the reload)
        assert await eventually(lambda: gw.metrics.get("cut_off_confirmed", "ledger") == 1), (
            dict(gw.metrics.counters)
        )
        assert gw.metrics.get("cut_off_unconfirmed") == 0
        assert devs[0].client.is_open
        await listener.close()
        await devs[0].close()


async def test_gateway_restart_mid_handshake(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        did = dev.device_id
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        # a HELLO whose PROOF will reach the gateway only after it restarted
        downs: list[bytes] = []
        dev.client.on_message = lambda t, p: downs.append(p)
        dev.counter += 1
        key = gateway_key(dev.identity.secret, did, b"gw-a", dev.epoch, dev.firmware_hash)
        role = DeviceRole(did, b"gw-a", bytes(key), dev.epoch)
        dev.replay(dev.up, role.hello(dev.counter, os.urandom(8)))
        assert await eventually(lambda: downs)
        proof, _ = role.receive(downs[0], time.monotonic())
        assert proof is not None and proof[0] == 0x13
        assert gw.counters.floor(did, 0) == 2  # durable before the challenge left
        enforcer = gw._enforcer
        await stop_gateway(s, "gw-a")
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer)
        assert gw.counters.floor(did, 0) == 2 and gw.devices.entries[did].counter == 2
        # the PROOF of the half-done handshake meets a gateway that waits for nothing: no session
        dev.replay(dev.up, proof)
        assert await eventually(lambda: gw.metrics.get("rejected", "unexpected") == 1)
        assert did not in gw.traffic.sessions and gw.metrics.get("authenticated") == 0
        # the device's next attempt, with a new counter, authenticates; the floor only moved up
        dev.client.on_message = dev._on_message
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert dev.counter == 3 and gw.counters.floor(did, 0) == 3
        await dev.close()


async def test_junk_on_data_topics_and_oversize_packets(tmp_path):
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        dev, idle = s.sim(0), s.sim(1)
        for d in (dev, idle):
            await d.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        data = topics.data("gw-a", dev.hex, "telemetry")
        # data without a session, junk data, oversize data, stream names outside the one rule
        idle.client.publish(topics.data("gw-a", idle.hex, "telemetry"), b"\x15" + bytes(12), qos=1)
        for junk in (b"", b"\x15", b"\x16" + bytes(12), b"\x25" + bytes(12), b"\xaa" * 40):
            dev.client.publish(data, junk, qos=1)
        dev.client.publish(data, b"\x15" + bytes(4) + bytes(20_000) + bytes(8), qos=1)
        dev.client.publish(_level(data, 5, "s" * 300), dev.session.seal(b"x", b"y"), qos=1)
        dev.client.publish(_level(data, 5, "températuré"), b"\x15" + bytes(12), qos=1)
        expected = {
            ("data_dropped", "no_session"): 1,
            ("data_dropped", "bad_message"): 6,
            ("dropped", "bad_topic"): 2,
        }
        assert await eventually(
            lambda: all(gw.metrics.get(*k) == v for k, v in expected.items())
        ), dict(gw.metrics.counters)
        # topics the broker would never deliver to this gateway (enforcement) are refused all the same
        bad_topics = [
            topics.data("gw-b", dev.hex, "telemetry"),  # another gateway's
            _level(data, 4, dev.hex.upper()),  # not the canonical id
            _level(data, 4, " ".join(dev.hex[i:i + 2] for i in range(0, 16, 2))),
            _level(data, 4, dev.hex[:12]),
            _level(data, 4, "z" * 16),
            _level(data, 5, ""),
            topics.handshake_down("gw-a", dev.hex),
            topics.handshake_up("gw-b", dev.hex),
            _level(topics.handshake_up("gw-a", dev.hex), 2, "x"),
            _level(data, 1, "v2"),
            data + "/extra",
            "/".join(data.split("/")[:3]),
            "",
        ]
        for t in bad_topics:
            gw.traffic.on_message(t.encode(), dev.session.seal(b"telemetry", b"moved"))
        gw.traffic.on_message(data.encode().replace(dev.hex.encode(), b"\xff\xfe"), b"\x15" + bytes(12))
        assert gw.metrics.get("dropped", "bad_topic") == 2 + len(bad_topics) + 1
        assert gw.metrics.get("data_verified") == 0
        # an MQTT packet larger than the gateway accepts: the broker refuses it, the gateway never sees it
        dev.client.publish(dev.up, bytes(2 << 20), qos=1)
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 5)
        # the gateway lives on: still one broker connection, and devices still authenticate
        listener, got = await s.listener()
        assert isinstance(await idle.authenticate(), events.Authenticated)
        idle.send_data("telemetry", b"fine")
        assert await eventually(lambda: got), dict(gw.metrics.counters)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert gw.metrics.get("mqtt_connects") == 1 and gw.mqtt_connected.is_set()
        assert gw.metrics.get("data_verified") == 1
        await listener.close()
        for d in (dev, idle):
            await d.close()


async def test_flood_of_bogus_handshakes(tmp_path):
    n_flooders, n_legit, per_flooder = 3, 4, 3400
    defence = DefenceSettings(max_tracked_devices=1000)
    async with site(tmp_path, n_devices=n_flooders + n_legit, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]
        flooders = [await raw_device_client(s.broker.port, s.devices[i]) for i in range(n_flooders)]
        legit = [s.sim(n_flooders + i) for i in range(n_legit)]
        for d in legit:
            await d.connect()

        async def flood(i: int) -> None:
            c = flooders[i]
            up = topics.handshake_up("gw-a", s.devices[i].device_id.hex())
            for k in range(per_flooder):
                kind = k % 3
                if kind == 0:  # well-formed HELLO with a wrong OTP
                    msg = b"\x11" + bytes(4) + (k + 1).to_bytes(4, "big") + os.urandom(12)
                elif kind == 1:
                    msg = os.urandom(k % 40)
                else:
                    msg = b"\x13" + os.urandom(8)
                c.publish(up, msg)
                if k % 200 == 0:
                    await asyncio.sleep(0)

        def handled() -> int:
            c = gw.metrics.counters
            return sum(v for (name, _), v in c.items() if name in ("handshake_refused", "rejected"))

        async def legit_handshakes() -> list[object]:
            assert await eventually(lambda: handled() > 0, 10, interval=0.001)  # the flood has arrived
            return list(await asyncio.gather(*(d.authenticate(timeout=10) for d in legit)))

        results = (await asyncio.gather(*(flood(i) for i in range(n_flooders)), legit_handshakes()))[-1]
        assert all(isinstance(r, events.Authenticated) for r in results), results
        # the gateway is not sent unknown ids through an enforcing broker; feed some in directly
        for k in range(5000):
            gw.traffic.on_message(topics.handshake_up("gw-a", f"{k:016x}").encode(), b"\x11" + os.urandom(20))
        total = n_flooders * per_flooder

        assert await eventually(lambda: handled() >= total, 20), dict(gw.metrics.counters)
        assert gw.traffic.defence.tracked <= 1000
        assert gw.devices.role.pending <= gw.settings.protocol.max_pending
        refused = gw.metrics.get("handshake_refused", "rate_limited") + gw.metrics.get(
            "handshake_refused", "locked_out"
        )
        assert refused > total // 2 and gw.metrics.get("handshake_refused", "rate_limited") > 0
        assert gw.metrics.get("rejected", "bad_otp") >= n_flooders
        assert gw.metrics.get("rejected", "unknown_device") > 0
        assert gw.metrics.get("authenticated") == n_legit
        # and after the flood the legitimate devices still authenticate
        for d in legit:
            assert isinstance(await d.authenticate(), events.Authenticated)
        for c in flooders:
            await c.close()
        for d in legit:
            await d.close()


async def test_revocation_during_a_broker_outage_is_enforced_when_it_returns(tmp_path):
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        kept, revoked = s.sim(0), s.sim(1)
        for d in (kept, revoked):
            await d.connect()
            assert isinstance(await d.authenticate(), events.Authenticated)
        s.broker.stop()
        await s.actors["owner"].revoke(revoked.device_id)
        # the gateway learns it from the ledger while the broker is away; the reload cannot be sent
        assert await eventually(lambda: revoked.device_id not in gw.devices.entries)
        assert await eventually(lambda: gw.metrics.get("mqtt_connect_errors") >= 1)
        s.broker.start()
        assert await eventually(lambda: gw.mqtt_connected.is_set(), 15)
        with pytest.raises(MqttConnectError):
            await revoked.connect(timeout=3)
        await kept.connect()
        assert isinstance(await kept.authenticate(), events.Authenticated)
        assert revoked.device_id not in gw.traffic.sessions
        await kept.close()


async def test_the_gateway_redials_the_broker_within_two_seconds_however_long_it_was_gone() -> None:
    """Found by the campaign: the redial delay grew to 10 s, so after a broker kill -9 of a few seconds
    the gateway stayed away up to 6 s longer and its whole fleet with it. Full jitter stays."""
    from gateway.service import reconnect_delay

    worst = [reconnect_delay(n, lambda lo, hi: hi) for n in range(1, 40)]
    assert max(worst) <= 2.0
    assert worst[0] < worst[2]  # it still grows from a short first delay
    assert reconnect_delay(5, lambda lo, hi: lo) == 0.0  # and is drawn from [0, bound]



@pytest.mark.asyncio
async def test_a_cancellation_swallowed_while_connecting_still_ends_the_mqtt_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.11 a wait_for inside MqttClient.connect can swallow the CancelledError that stop() (or a
    crash) sends when its future completes at the same moment; the loop then held a healthy connection
    and waited on it forever, so stopping the gateway hung (found under load, test_peer_gateways)."""
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        await stop_gateway(s, "gw-a")  # its own loop gone: nobody takes the connection over
        gw._stopping.clear()
        real = MqttClient.connect.__func__  # type: ignore[attr-defined]

        async def connect_swallowing(cls: type[MqttClient], *args: Any, **kwargs: Any) -> MqttClient:
            client: MqttClient = await real(cls, *args, **kwargs)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:  # what 3.11's wait_for does when the connect completes as the cancellation arrives
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
            return client

        monkeypatch.setattr(MqttClient, "connect", classmethod(connect_swallowing))
        loop = asyncio.create_task(gw._mqtt_loop(None))
        done, _ = await asyncio.wait({loop}, timeout=10)
        if not done:
            loop.cancel()
        assert done, "the MQTT loop kept a connection after its task was cancelled"
