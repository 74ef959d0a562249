"""Least privilege at the broker: the gateway level of a device's topics accepts only registered gateway
ids (before, any `+` level did: a device could park messages under made-up gateway ids)."""

from __future__ import annotations

import pytest

from device_agent.core import topics
from firmware_sim.broker import mosquitto_binary
from gateway.broker import BrokerSecret, Enroll, handshake_up, mosquitto_config_lines
from tests.broker.clients import Probe
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require

D1 = "00000000000000d1"
NOT_AUTHORIZED = 135
NO_SUBSCRIBERS = 16  # accepted, nobody listening


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_device_reaches_only_registered_gateways_topics() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        device = Probe(env.broker, D1, secret.reveal())
        assert device.connect() == 0
        assert device.publish(handshake_up(env.gateway_id, D1), b"hello").value == NO_SUBSCRIBERS
        assert device.publish(str(topics.data(env.gateway_id, D1, "temp")), b"d").value == NO_SUBSCRIBERS
        for made_up in ("gw-nobody", "x"):
            assert device.publish(handshake_up(made_up, D1), b"park").value == NOT_AUTHORIZED
            assert device.publish(str(topics.data(made_up, D1, "temp")), b"park").value == NOT_AUTHORIZED
        device.close()


def test_the_broker_config_bounds_queued_bytes(tmp_path) -> None:
    lines = mosquitto_config_lines(tmp_path / "p", tmp_path / "a")
    assert any(line.startswith("max_queued_bytes ") and int(line.split()[1]) > 0 for line in lines)
