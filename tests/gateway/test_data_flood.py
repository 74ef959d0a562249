"""Per-device rate limits on data, checked before the MAC: one authenticated device flooding valid
DATA gets a bounded share; when it keeps on it loses its session and is cut off at the broker for a
while, and another device's handshake still goes through. (Latency under the flood is a figure:
bench/bench_flood.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from device_agent.core import events
from gateway.defence import DataLimiter, PreAuthBan
from gateway.mqtt import MqttConnectError
from gateway.settings import DefenceSettings
from tests.gateway.helpers import eventually, reconnect_after_ban
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio


async def test_the_data_bucket_refuses_past_its_rate_then_calls_a_flood() -> None:
    limiter = DataLimiter(rate=10.0, burst=5, flood_after=8, max_tracked=2, now=0.0)
    d = b"\x01" * 8
    assert [limiter.admit(d, 0.0) for _ in range(5)] == [""] * 5
    assert [limiter.admit(d, 0.0) for _ in range(7)] == ["rate_limited"] * 7
    assert limiter.admit(d, 0.0) == "flooding"
    assert limiter.admit(d, 0.2) == ""  # refilled at the rate: 10/s
    limiter.reset(d)
    assert [limiter.admit(d, 0.2) for _ in range(5)] == [""] * 5
    for i in range(5):  # bounded state: the least recently seen devices are forgotten
        limiter.admit(bytes([i]) * 8, 1.0)
    assert len(limiter._buckets) == 2


async def test_a_flooding_device_is_banned_at_once_and_only_once() -> None:
    ban = PreAuthBan(rate=10.0, burst=5, ban_seconds=2.0, max_tracked=2, now=0.0)
    d = b"\x01" * 8
    assert ban.ban(d, 0.0) is True and ban.banned(d, 1.0)
    assert ban.ban(d, 1.0) is False and ban.refused(d, 1.0) is False  # one ban, one cut-off
    assert not ban.banned(d, 2.1) and ban.refused(d, 2.1) is False  # then a fresh allowance


async def test_a_device_flooding_valid_data_is_bounded_loses_its_session_and_is_cut_off(tmp_path) -> None:
    defence = DefenceSettings(data_rate=20.0, data_burst=50, data_flood_after=300, preauth_ban=3.0)
    async with site(tmp_path, n_devices=2, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]
        flooder, victim = s.sim(0), s.sim(1)
        for d in (flooder, victim):
            await d.connect()
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        for i in range(2_000):  # valid, sealed under the session: each would cost the gateway a MAC
            flooder.send_data("telemetry", b"%d" % i)
        m = gw.metrics
        assert await eventually(lambda: m.get("flood_bans") == 1, 15), dict(m.counters)
        banned_at = time.monotonic()
        verified = m.get("data_verified")
        assert 50 <= verified < 400, verified  # the burst, plus the rate over the seconds it took
        assert m.get("data_dropped", "rate_limited") >= 300
        assert m.get("sessions_ended", "flood") == 1 and flooder.device_id not in gw.traffic.sessions
        # the session's end is not the end of the flood: the broker closes the connection at once,
        # not after the pre-authentication allowance (thousands more messages) has run out
        assert await eventually(lambda: flooder.client.closed.done(), 5), "the broker closed its connection"
        assert m.get("preauth_bans") == 0
        audit = (gw.settings.state_dir / "audit.log").read_text()
        assert '"event":"data_flood"' in audit and '"ban_seconds":3.0' in audit
        with pytest.raises(MqttConnectError):
            await flooder.connect(timeout=3)
        assert isinstance(await victim.authenticate(), events.Authenticated)
        # after the ban, enrolled again: it authenticates (at the handshake rate) and sends at its data rate
        await reconnect_after_ban(flooder)
        assert time.monotonic() - banned_at >= 2.5
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        flooder.send_data("telemetry", b"calm")
        assert await eventually(lambda: gw.metrics.get("data_verified") == verified + 1, 5)
        assert m.get("flood_bans") == 1
        for d in (flooder, victim):
            await d.close()
        await asyncio.sleep(0)
