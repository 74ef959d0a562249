"""Small helpers shared by the gateway's integration tests (waiting, raw connections); an application
listening to verified data is ``Site.listener`` (firmware_sim/inproc.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.mqtt import MqttClient, MqttConnectError
from ledger_bridge.enrollment import ProvisionedDevice
from tests.waiting import eventually

__all__ = ["eventually", "raw_device_client", "reconnect_after_ban"]


async def raw_device_client(port: int, device: ProvisionedDevice, **kw: Any) -> MqttClient:
    """A bare MQTT connection under an enrolled device's broker account (an attacker holding it)."""
    hex_id = device.device_id.hex()
    return await MqttClient.connect(
        "127.0.0.1", port, client_id=hex_id, username=hex_id, password=device.broker_password(0), **kw
    )


async def reconnect_after_ban(device: Any, within: float = 20.0) -> None:
    """Dial a ``SimDevice`` the broker cut off until its account is back (the ban ended and the gateway
    enrolled it again); fails the test when it is not back ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            await device.connect(timeout=3)
            return
        except MqttConnectError:
            if time.monotonic() > deadline:
                raise AssertionError(f"not enrolled again within {within:.0f} s of its ban") from None
            await asyncio.sleep(0.2)
