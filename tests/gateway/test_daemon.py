"""The gateway daemon against real Mosquitto and a real EVM: handshakes, data, policy, cut-off."""

from __future__ import annotations

import asyncio
import os

import pytest

from device_agent.core import events, topics
from gateway.mqtt import MqttConnectError
from tests.gateway.stack import site, start_gateway, stop_gateway
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio


async def test_handshake_data_and_policy(tmp_path):
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        result = await dev.authenticate()
        assert isinstance(result, events.Authenticated), result
        listener, got = await s.listener()
        dev.send_data("telemetry", b'{"t": 21.5}')
        dev.send_data("telemetry", b'{"t": 21.6}')
        ok = await eventually(lambda: len(got) == 2)
        assert ok, (dict(gw.metrics.counters), got)
        assert got[0] == (topics.verified("gw-a", dev.hex, "telemetry").encode(), b'{"t": 21.5}')
        # forged, replayed and out-of-policy data are dropped and counted, never republished
        data = topics.data("gw-a", dev.hex, "telemetry")
        dev.client.publish(data, b"\x15" + os.urandom(20), qos=1)
        dev.replay(data, dev.session.seal(b"telemetry", b"x"))
        again = dev.session.seal(b"telemetry", b"y")
        dev.replay(data, again)
        dev.replay(data, again)
        dev.send_data("gps", b"not in policy")
        assert await eventually(lambda: gw.metrics.get("data_dropped", "not_in_policy") == 1)
        assert await eventually(lambda: gw.metrics.get("data_dropped", "replay") == 1)
        assert gw.metrics.get("data_dropped", "forged") == 1
        assert await eventually(lambda: len(got) >= 4)  # counted at the gateway, then delivered to us
        assert [p for _, p in got] == [b'{"t": 21.5}', b'{"t": 21.6}', b"x", b"y"]
        # a command from the gateway reaches the device, verified under the session
        assert gw.traffic.send_command(dev.device_id, "config", b"interval=60")
        assert await eventually(lambda: dev.stats.commands == [b"interval=60"])
        # another device cannot publish into this device's topics: the broker refuses (dropped)
        other = s.sim(1)
        await other.connect()
        assert isinstance(await other.authenticate(), events.Authenticated)
        await other.client.publish_acked(data, dev.session.seal(b"telemetry", b"spoof"))
        # acknowledged: the broker has routed or dropped it, so anything it let through reaches the
        # gateway before a message the device sends now
        dev.send_data("telemetry", b"after")
        assert await eventually(lambda: b"after" in [p for _, p in got])
        assert b"spoof" not in [p for _, p in got]
        audit = (gw.settings.state_dir / "audit.log").read_text()
        assert '"event":"authenticated"' in audit and dev.hex in audit
        await listener.close()
        await dev.close()
        await other.close()


async def test_revocation_cuts_the_device_off(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        await s.actors["owner"].revoke(dev.device_id)
        # how fast is bench's revocation_cutoff figure; here only that it happens
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 30)
        assert dev.device_id not in gw.traffic.sessions and dev.device_id not in gw.devices.entries
        with pytest.raises(MqttConnectError):
            await dev.connect(timeout=3)
        assert '"event":"cut_off"' in (gw.settings.state_dir / "audit.log").read_text()


async def test_malformed_and_oversize_payloads_are_refused_and_the_gateway_lives(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        replies = []
        dev.client.on_message = lambda t, p: replies.append(p)
        for junk in (b"", b"\x11", b"\xff" * 21, os.urandom(5000), b"\x13" + bytes(8)):
            dev.client.publish(dev.up, junk, qos=1)
        assert await eventually(lambda: gw.metrics.get("rejected", "bad_message") >= 3)
        assert all(r[0] == 0x17 for r in replies)  # REJECTs only
        dev.client.on_message = dev._on_message
        dev.stats.rejected.clear()
        # junk costs the device's rate bucket, never a lockout (it is not a failed handshake): once the
        # bucket refills, the device authenticates
        async def authenticates() -> bool:
            return isinstance(await dev.authenticate(timeout=1.0), events.Authenticated)

        assert await eventually(authenticates, 15)
        assert gw.metrics.get("lockouts") == 0
        await dev.close()


async def test_counters_survive_a_gateway_restart_and_replays_never_authenticate(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        captured_hello = dev.sent_messages[-2]
        enforcer = s.gateways["gw-a"]._enforcer
        await stop_gateway(s, "gw-a")
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer)
        assert gw.devices.entries[dev.device_id].counter == dev.counter  # floor restored from disk
        dev.replay(dev.up, captured_hello)  # an attacker's replay: refused and counted, never a session
        assert await eventually(lambda: gw.metrics.get("rejected", "replay") == 1)
        assert dev.device_id not in gw.traffic.sessions
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert gw.metrics.get("authenticated") == 1
        await dev.close()


async def test_no_session_is_granted_that_the_audit_log_cannot_record(tmp_path):
    """Fail closed: with the audit log's disk full, a correct handshake gets no RESULT and no session;
    once the disk has room, the device authenticates and the record names its counter and epoch."""
    from gateway.audit import AuditUnavailable, records

    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        append = gw.traffic.audit.append

        def full(event, **fields):
            raise AuditUnavailable("audit log: record not written (No space left on device)")

        gw.traffic.audit.append = full
        try:
            result = await dev.authenticate(timeout=2)
            assert not isinstance(result, events.Authenticated), result
            assert dev.device_id not in gw.traffic.sessions
            assert gw.metrics.get("handshake_refused", "audit_unavailable") == 1
        finally:
            gw.traffic.audit.append = append
        result = await dev.authenticate()
        assert isinstance(result, events.Authenticated), result
        gw.traffic.audit.sync()
        authenticated = [r for r in records(gw.traffic.audit.path) if r["event"] == "authenticated"]
        assert [(r["device"], r["epoch"], r["counter"]) for r in authenticated] == [(dev.hex, 0, dev.counter)]
