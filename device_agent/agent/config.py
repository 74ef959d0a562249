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

Read by the loader the gateway uses too (``device_agent.settings``): unknown keys are refused, every
value is typed, every error names its key (``broker.port``), a missing file (the configuration or the
firmware image) is a ``ConfigError``, and ``diams-agent run`` exits 2 on it (the unit does not restart).
``_LAYOUT`` is the one place the file's keys are mapped to ``AgentConfig`` fields.
"""

from __future__ import annotations

import hashlib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.core import topics as _topics
from device_agent.settings import EnvText, SettingsError, convert, read_toml, refuse_unknown, table

__all__ = ["AgentConfig", "ConfigError", "StreamConfig", "load_config"]

_T: Any = _topics  # identifier rules: the core's topic module (one rule for every side)


ConfigError = SettingsError  # the configuration is missing a value or holds a bad one (names the key)


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """A data stream: publishes the content of ``source`` (a file) every ``interval_s`` seconds."""

    name: str
    source: Path | None = None
    interval_s: float = 30.0

    def __post_init__(self) -> None:
        if not _T.is_name(self.name):
            raise ConfigError(f"streams name {self.name!r} must be 1-64 of [A-Za-z0-9_-]")
        if self.interval_s <= 0:
            raise ConfigError(f"streams interval_s must be > 0, got {self.interval_s}")


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
            raise ConfigError(f"device.id must be 16 lowercase hex digits, got {self.device_id!r}")
        if len(self.firmware_hash) != 32:
            raise ConfigError(f"device.firmware_hash must be 32 bytes, got {len(self.firmware_hash)}")
        if not self.gateways:
            raise ConfigError("gateways.ids needs at least one gateway id")
        for g in self.gateways:
            if not _T.is_gateway_id(g):
                raise ConfigError(f"gateways.ids: {g!r} must be 1-32 of [a-z0-9-]")
        if len(set(self.gateways)) != len(self.gateways):
            raise ConfigError("gateways.ids must be distinct")
        if not 0 <= self.epoch <= 0xFFFFFFFF:
            raise ConfigError(f"device.epoch must be 0..2**32-1, got {self.epoch}")
        if not 0 < self.broker_port < 65536:
            raise ConfigError(f"broker.port must be 1..65535, got {self.broker_port}")
        if self.answer_timeout_s <= 0:
            raise ConfigError(f"gateways.answer_timeout_s must be > 0, got {self.answer_timeout_s}")
        if self.reauth_margin_s < 0:
            raise ConfigError(f"session.reauth_margin_s must be >= 0, got {self.reauth_margin_s}")
        if self.keepalive_s < 5:
            raise ConfigError(f"broker.keepalive_s must be >= 5, got {self.keepalive_s}")
        if self.backoff_base_s <= 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError("backoff.base_s and backoff.cap_s need 0 < base_s <= cap_s")
        if not 0 < self.reconnect_base_s <= self.backoff_cap_s:
            raise ConfigError("backoff.reconnect_base_s needs 0 < reconnect_base_s <= cap_s")
        if self.counter_block < 1:
            raise ConfigError(f"counters.block must be >= 1, got {self.counter_block}")

    @property
    def device_id_bytes(self) -> bytes:
        return bytes.fromhex(self.device_id)


# (section, key) in the TOML file -> AgentConfig field
_LAYOUT: dict[tuple[str, str], str] = {
    ("device", "id"): "device_id",
    ("device", "key_file"): "key_file",
    ("device", "state_file"): "state_file",
    ("device", "firmware_hash"): "firmware_hash",
    ("device", "epoch"): "epoch",
    ("broker", "host"): "broker_host",
    ("broker", "port"): "broker_port",
    ("broker", "keepalive_s"): "keepalive_s",
    ("broker", "tls_ca"): "broker_tls_ca",
    ("gateways", "ids"): "gateways",
    ("gateways", "answer_timeout_s"): "answer_timeout_s",
    ("session", "reauth_margin_s"): "reauth_margin_s",
    ("backoff", "base_s"): "backoff_base_s",
    ("backoff", "cap_s"): "backoff_cap_s",
    ("backoff", "reconnect_base_s"): "reconnect_base_s",
    ("counters", "block"): "counter_block",
}
_FIRMWARE_FILE = ("device", "firmware_file")  # hashed into firmware_hash when that is not given
_ENV = {"DIAMS_BROKER_HOST": ("broker", "host"), "DIAMS_BROKER_PORT": ("broker", "port")}
_SECTIONS = sorted({section for section, _ in (*_LAYOUT, _FIRMWARE_FILE)})


def config_from_mapping(data: Mapping[str, Any], *, base: Path = Path("."),
                        environ: Mapping[str, str] | None = None) -> AgentConfig:
    """``AgentConfig`` from the TOML file's tables; relative paths are relative to ``base``."""
    env = os.environ if environ is None else environ
    refuse_unknown(data, [*_SECTIONS, "streams"])
    raw: dict[tuple[str, str], Any] = {}
    for section in _SECTIONS:
        values = table(data, section)
        known = [k for s, k in (*_LAYOUT, _FIRMWARE_FILE) if s == section]
        refuse_unknown(values, known, f"{section}.")
        raw.update({(section, k): v for k, v in values.items()})
    for name, place in _ENV.items():
        if name in env:
            raw[place] = EnvText(env[name])

    def relative(text: str, key: str) -> Path:
        return base / text

    hints = typing.get_type_hints(AgentConfig)
    kwargs: dict[str, Any] = {}
    for place, value in raw.items():
        key = ".".join(place)
        if place == _FIRMWARE_FILE:
            if ("device", "firmware_hash") not in raw:
                image = convert(Path, value, key, path=relative)
                try:
                    kwargs["firmware_hash"] = hashlib.sha256(image.read_bytes()).digest()
                except OSError as exc:
                    raise ConfigError(f"{key}: cannot read {image}: {exc.strerror or exc}") from None
            continue
        kwargs[_LAYOUT[place]] = convert(hints[_LAYOUT[place]], value, key, path=relative)
    if "firmware_hash" not in kwargs:
        raise ConfigError("[device] needs firmware_hash or firmware_file")
    for place, name in _LAYOUT.items():
        f = AgentConfig.__dataclass_fields__[name]
        if name not in kwargs and f.default is f.default_factory:  # both MISSING: required
            raise ConfigError(f"missing setting {'.'.join(place)}")
    streams = data.get("streams", [])
    if not isinstance(streams, list):
        raise ConfigError(f"streams must be an array of tables ([[streams]]), got {streams!r}")
    kwargs["streams"] = tuple(
        convert(StreamConfig, s, f"streams[{i}]", path=relative) for i, s in enumerate(streams)
    )
    return AgentConfig(**kwargs)


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the TOML file; relative paths in it are relative to its directory."""
    return config_from_mapping(read_toml(path), base=path.parent, environ=environ)
