"""diams-agent: the CPython (Raspberry Pi) device agent, a thin paho-mqtt adapter around the protocol core.

Modules, one job each: ``config`` (TOML settings as frozen values), ``keystore`` (the device secret in a
0600 file), ``counters`` (durable writes of the counter file), ``driver`` (sans-IO: the core's agent
policy, ``device_agent.core.policy``, decides failover, epoch hints, re-authentication, backoff and
counter reservation; the driver holds the handshake roles, the session and commands), ``mqtt`` (the
paho adapter that moves bytes between the broker and the driver), ``provision`` (manufacture-time
secret and registration record) and ``cli`` (``diams-agent``).
"""

from __future__ import annotations

from .config import AgentConfig, ConfigError, StreamConfig, load_config
from .keystore import DeviceSecret, KeystoreError, load_secret

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DeviceSecret",
    "KeystoreError",
    "StreamConfig",
    "load_config",
    "load_secret",
]
