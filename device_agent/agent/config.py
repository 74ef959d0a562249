"""Agent settings: frozen keyword-only values, checked when built, loaded once from TOML + environment.

Example (docs/AGENT.md has the full file)::

    [device]
    id = "3f9a0c1d2e4b5a69"            # 16 lowercase hex digits, from `diams-agent provision`
    key_file = "/var/lib/diams-agent/secret.key"     # 0600, S as hex
    state_file = "/var/lib/diams-agent/state.json"   # counters and epoch
    firmware_hash = "<64 hex>"         # or firmware_file = "/path/to/image"
    epoch = 0

    [broker]
    host = "127.0.0.1"
    port = 1883

    [gateways]
    ids = ["gw-a", "gw-b"]             # failover order
    answer_timeout_s = 5.0

    [[streams]]
    name = "telemetry"
    source = "/sys/class/thermal/thermal_zone0/temp"
    interval_s = 30

Environment overrides: DIAMS_BROKER_HOST, DIAMS_BROKER_PORT.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.core import topics as _topics

__all__ = ["AgentConfig", "ConfigError", "StreamConfig", "load_config"]

_T: Any = _topics  # identifier rules: the core's topic module (one rule for every side)


class ConfigError(ValueError):
    """The configuration is missing a value or holds a bad one."""


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """A data stream: publishes the content of ``source`` (a file) every ``interval_s`` seconds."""

    name: str
    source: Path | None = None
    interval_s: float = 30.0

    def __post_init__(self) -> None:
        if not _T.is_name(self.name):
            raise ConfigError(f"stream name {self.name!r} must be 1-64 of [A-Za-z0-9_-]")
        if self.interval_s <= 0:
            raise ConfigError("stream interval_s must be > 0")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    device_id: str
    key_file: Path
    state_file: Path
    firmware_hash: bytes
    gateways: tuple[str, ...]
    epoch: int = 0
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    keepalive_s: int = 30
    answer_timeout_s: float = 5.0
    reauth_margin_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    reconnect_base_s: float = 5.0
    counter_block: int = 16
    streams: tuple[StreamConfig, ...] = field(default_factory=tuple)
    broker_tls_ca: Path | None = None  # MQTT over TLS: the CA that signed the broker's certificate

    def __post_init__(self) -> None:
        if not _T.is_device_id(self.device_id):
            raise ConfigError("device id must be 16 lowercase hex digits")
        if len(self.firmware_hash) != 32:
            raise ConfigError("firmware hash must be 32 bytes")
        if not self.gateways:
            raise ConfigError("at least one gateway id is needed")
        for g in self.gateways:
            if not _T.is_gateway_id(g):
                raise ConfigError(f"gateway id {g!r} must be 1-32 of [a-z0-9-]")
        if len(set(self.gateways)) != len(self.gateways):
            raise ConfigError("gateway ids must be distinct")
        if not 0 <= self.epoch <= 0xFFFFFFFF:
            raise ConfigError("epoch must be a u32")
        if not 0 < self.broker_port < 65536:
            raise ConfigError("broker port out of range")
        if self.answer_timeout_s <= 0 or self.reauth_margin_s < 0 or self.keepalive_s < 5:
            raise ConfigError("timeouts must be positive (keepalive >= 5 s)")
        if self.backoff_base_s <= 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError("backoff needs 0 < base_s <= cap_s")
        if not 0 < self.reconnect_base_s <= self.backoff_cap_s:
            raise ConfigError("backoff needs 0 < reconnect_base_s <= cap_s")
        if self.counter_block < 1:
            raise ConfigError("counter block must be >= 1")

    @property
    def device_id_bytes(self) -> bytes:
        return bytes.fromhex(self.device_id)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _firmware_hash(device: Mapping[str, Any], base: Path) -> bytes:
    if "firmware_hash" in device:
        try:
            return bytes.fromhex(str(device["firmware_hash"]).removeprefix("0x"))
        except ValueError:
            raise ConfigError("firmware_hash must be hex") from None
    if "firmware_file" in device:
        return hashlib.sha256((base / str(device["firmware_file"])).read_bytes()).digest()
    raise ConfigError("[device] needs firmware_hash or firmware_file")


def config_from_mapping(data: Mapping[str, Any], *, base: Path = Path("."),
                        environ: Mapping[str, str] | None = None) -> AgentConfig:
    env = os.environ if environ is None else environ
    device = _section(data, "device")
    broker = _section(data, "broker")
    gateways = _section(data, "gateways")
    session = _section(data, "session")
    backoff = _section(data, "backoff")
    counters = _section(data, "counters")
    try:
        streams = tuple(
            StreamConfig(name=str(s["name"]),
                         source=(base / str(s["source"])) if s.get("source") else None,
                         interval_s=float(s.get("interval_s", 30.0)))
            for s in data.get("streams", ())
        )
        return AgentConfig(
            device_id=str(device["id"]),
            key_file=base / str(device["key_file"]),
            state_file=base / str(device["state_file"]),
            firmware_hash=_firmware_hash(device, base),
            epoch=int(device.get("epoch", 0)),
            broker_host=env.get("DIAMS_BROKER_HOST", str(broker.get("host", "127.0.0.1"))),
            broker_port=int(env.get("DIAMS_BROKER_PORT", broker.get("port", 1883))),
            keepalive_s=int(broker.get("keepalive_s", 30)),
            gateways=tuple(str(g) for g in gateways.get("ids", ())),
            answer_timeout_s=float(gateways.get("answer_timeout_s", 5.0)),
            reauth_margin_s=float(session.get("reauth_margin_s", 60.0)),
            backoff_base_s=float(backoff.get("base_s", 0.5)),
            backoff_cap_s=float(backoff.get("cap_s", 60.0)),
            reconnect_base_s=float(backoff.get("reconnect_base_s", 5.0)),
            counter_block=int(counters.get("block", 16)),
            streams=streams,
            broker_tls_ca=(base / str(broker["tls_ca"])) if broker.get("tls_ca") else None,
        )
    except KeyError as exc:
        raise ConfigError(f"missing setting {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad setting: {exc}") from None


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the TOML file; relative paths in it are relative to its directory."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return config_from_mapping(data, base=path.parent, environ=environ)
