"""Per-device rate limits on data, checked before the MAC: one authenticated device flooding valid
DATA gets a bounded share, loses its session when it keeps on, and another device's handshake still
goes through. (Latency under the flood is a figure: bench/bench_flood.py.)"""

from __future__ import annotations

import asyncio

import pytest

from device_agent.core import events
from gateway.defence import DataLimiter
from gateway.settings import DefenceSettings
from tests.gateway.helpers import eventually
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


async def test_a_device_flooding_valid_data_is_bounded_and_loses_its_session(tmp_path) -> None:
    defence = DefenceSettings(data_rate=20.0, data_burst=50, data_flood_after=300)
    async with site(tmp_path, n_devices=2, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]
        flooder, victim = s.sim(0), s.sim(1)
        for d in (flooder, victim):
            await d.connect()
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        for i in range(2_000):  # valid, sealed under the session: each would cost the gateway a MAC
            flooder.send_data("telemetry", b"%d" % i)
        assert isinstance(await victim.authenticate(), events.Authenticated)
        m = gw.metrics
        assert await eventually(
            lambda: m.get("data_dropped", "rate_limited") + m.get("data_dropped", "no_session")
            + m.get("data_verified") >= 2_000, 15
        ), dict(m.counters)
        verified = gw.metrics.get("data_verified")
        assert 50 <= verified < 400, verified  # the burst, plus the rate over the seconds it took
        assert gw.metrics.get("data_dropped", "rate_limited") >= 300
        assert gw.metrics.get("sessions_ended", "flood") == 1 and flooder.device_id not in gw.traffic.sessions
        assert victim.device_id in gw.traffic.sessions
        # the flooder can authenticate again (at the handshake rate) and send at its data rate
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        flooder.send_data("telemetry", b"calm")
        assert await eventually(lambda: gw.metrics.get("data_verified") == verified + 1, 5)
        for d in (flooder, victim):
            await d.close()
        await asyncio.sleep(0)
