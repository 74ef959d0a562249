"""MQTT over TLS end to end: a mosquitto listener that speaks TLS only (certificate from a test CA made
with ``cryptography``); the gateway (its client, the enforcer's canary and kick logins) and the
simulator's devices verify the broker's certificate. A client that does not trust the CA is refused."""

from __future__ import annotations

import ssl

import pytest

from device_agent.core import events
from gateway.mqtt import MqttConnectError
from tests.gateway.helpers import eventually
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio


async def test_gateway_and_devices_over_tls(tmp_path) -> None:
    async with site(tmp_path, n_devices=2, tls=True) as s:
        gw = s.gateways["gw-a"]
        assert s.tls_ca is not None and gw.settings.broker.tls_ca == s.tls_ca
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        listener_tls = ssl.create_default_context(cafile=str(s.tls_ca))
        listener, got = await s.listener(tls=listener_tls)
        dev.send_data("telemetry", b"over tls")
        assert await eventually(lambda: [p for _, p in got] == [b"over tls"], 5)
        # the enforcer's reload proof runs over TLS too: a revocation cuts the device off
        await s.actors["owner"].revoke(dev.device_id)
        assert await eventually(lambda: dev.client is not None and not dev.client.is_open, 10)
        # plain TCP, or TLS without trusting the CA: refused
        with pytest.raises(MqttConnectError):
            await s.sim(1, tls=None).connect(timeout=3)
        with pytest.raises(MqttConnectError, match="TLS"):
            await s.sim(1, tls=ssl.create_default_context()).connect(timeout=3)
        await listener.close()
