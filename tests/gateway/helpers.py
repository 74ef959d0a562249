"""Small helpers shared by the gateway's integration tests (waiting, listening, raw connections)."""

from __future__ import annotations

from typing import Any

from device_agent.core import topics
from gateway.mqtt import MqttClient
from ledger_bridge.enrollment import ProvisionedDevice
from tests.waiting import eventually

__all__ = ["eventually", "raw_device_client", "verified_listener"]


async def verified_listener(
    port: int, gw: Any, topic: str = topics.every(topics.VERIFIED), tls: Any = None
) -> tuple[MqttClient, list[Any]]:
    """Applications read verified data; tests listen with the gateway's second broker account."""
    got: list[Any] = []
    user = f"gateway-{gw.settings.gateway_id}.1"
    c = await MqttClient.connect(
        "127.0.0.1",
        port,
        client_id=user,
        username=user,
        password=gw._broker_password,
        on_message=lambda t, p: got.append((t, p)),
        tls=tls,
    )
    await c.subscribe([(topic, 1)])
    return c, got


async def raw_device_client(port: int, device: ProvisionedDevice, **kw: Any) -> MqttClient:
    """A bare MQTT connection under an enrolled device's broker account (an attacker holding it)."""
    hex_id = device.device_id.hex()
    return await MqttClient.connect(
        "127.0.0.1", port, client_id=hex_id, username=hex_id, password=device.broker_password(0), **kw
    )
