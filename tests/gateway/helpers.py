"""Small helpers shared by the gateway's integration tests (waiting, raw connections); an application
listening to verified data is ``Site.listener`` (firmware_sim/inproc.py)."""

from __future__ import annotations

from typing import Any

from gateway.mqtt import MqttClient
from ledger_bridge.enrollment import ProvisionedDevice
from tests.waiting import eventually

__all__ = ["eventually", "raw_device_client"]


async def raw_device_client(port: int, device: ProvisionedDevice, **kw: Any) -> MqttClient:
    """A bare MQTT connection under an enrolled device's broker account (an attacker holding it)."""
    hex_id = device.device_id.hex()
    return await MqttClient.connect(
        "127.0.0.1", port, client_id=hex_id, username=hex_id, password=device.broker_password(0), **kw
    )
