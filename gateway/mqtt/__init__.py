"""A lean MQTT 3.1.1 client for asyncio (the gateway's hot path and the fleet simulator)."""

from .client import (
    MqttClient,
    MqttConnectError,
    MqttConnectionLost,
    MqttError,
    MqttLoginRefused,
    MqttTimeout,
)
from .codec import MqttProtocolError

__all__ = [
    "MqttClient",
    "MqttConnectError",
    "MqttConnectionLost",
    "MqttError",
    "MqttLoginRefused",
    "MqttProtocolError",
    "MqttTimeout",
]
