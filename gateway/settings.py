"""Gateway configuration: frozen keyword-only values, loaded once from TOML plus environment.

Environment overrides use ``DIAMS_GATEWAY_<SECTION>_<KEY>`` (e.g. ``DIAMS_GATEWAY_BROKER_PORT=1884``).
Every value is checked when built; a bad one raises ``SettingsError`` naming the key and the rule.
Secrets are never values here, only paths to 0600 files (or systemd credentials).

Systemd credentials: a path setting written ``credential:NAME`` (e.g. ``key_file =
"credential:gateway.key"``) resolves to ``$CREDENTIALS_DIRECTORY/NAME``, the directory systemd fills
from the unit's ``LoadCredential=NAME:/path`` lines (readable only by the service, never on disk
under the service's own state). It is an error when ``$CREDENTIALS_DIRECTORY`` is not set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.core import topics
from device_agent.settings import EnvText, SettingsError, build, read_toml, table

__all__ = [
    "BrokerSettings",
    "DefenceSettings",
    "EnforcementSettings",
    "GatewaySettings",
    "HttpSettings",
    "LedgerSettings",
    "OfflineSettings",
    "ProtocolSettings",
    "SettingsError",
    "dump_settings",
    "load_settings",
    "resolve_credential",
]

ENV_PREFIX = "DIAMS_GATEWAY_"
CREDENTIAL_PREFIX = "credential:"
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password_file: Path | None = None  # 0600 file holding the gateway's broker password
    keepalive: int = 30
    connect_timeout: float = 10.0
    accounts: int = 1  # broker usernames for this gateway: gateway-<id>, gateway-<id>.1, ... (local tools)
    tls_ca: Path | None = None  # MQTT over TLS: the CA file that signed the broker's certificate

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context (certificate and host name verified), or None for plain TCP."""
        if self.tls_ca is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"broker.tls_ca: cannot load {self.tls_ca} ({exc})") from None
    alternates: str = ""  # a cluster's other nodes, "host:port,host:port": tried in turn when one fails

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"broker.port must be 1..65535, got {self.port}")
        self.addresses()  # checked now
        _positive("broker.connect_timeout", self.connect_timeout)

    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of the broker, then of ``alternates``."""
        out = [(self.host, self.port)]
        for item in filter(None, (a.strip() for a in self.alternates.split(","))):
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"broker.alternates: {item!r} is not host:port")
            out.append((host, int(port)))
        return out


@dataclass(frozen=True, kw_only=True)
class EnforcementSettings:
    # "mosquitto" (password + ACL files, reloads: one broker), "http" (a clustered broker asks this
    # gateway's endpoint, see docs/GATEWAY.md) or "none" (another party enforces)
    mode: str = "none"
    password_file: Path | None = None
    acl_file: Path | None = None
    pid_file: Path | None = None  # the broker's pid file, for SIGHUP (same user as the broker)
    reload_command: str = ""  # else a command, e.g. "systemctl --no-ask-password reload mosquitto"
    file_group: str | None = None
    rights: str = "patterns"
    # mosquitto's log file (log_dest file, connection_messages true): every cut-off is confirmed there,
    # and a device still connected is reported and kicked (gateway.broker._connections)
    broker_log: Path | None = None
    # read-only broker accounts for applications, "name=/path/to/0600-password-file,...": account
    # app-<name> may only receive the verified topics (mode = "mosquitto" or "http"; with "http", every
    # gateway of a cluster lists the same applications: each endpoint answers for its own list)
    applications: str = ""
    # mode = "http": the endpoint the broker asks, the other gateways' endpoints ("gw-b=http://h:p/auth,
    # ..."), and the broker's management API (comma-separated node URLs) to close connections
    http_host: str = "127.0.0.1"
    http_port: int = 9465
    http_shared_port: int = 0  # also listen here with SO_REUSEPORT: gateways on one host share it
    http_peers: str = ""
    management_urls: str = ""
    management_user: str = ""
    management_password_file: Path | None = None
    # where gateway accounts live: "endpoint" (the broker asks this endpoint, as for devices) or
    # "broker" (RabbitMQ internal users written through the management API: the broker decides a
    # gateway's own topics itself, and only device questions reach the endpoint; docs/GATEWAY.md §4a)
    gateway_accounts: str = "endpoint"

    def __post_init__(self) -> None:
        if self.mode not in ("mosquitto", "http", "none"):
            raise SettingsError(f"enforcement.mode must be 'mosquitto', 'http' or 'none', got {self.mode!r}")
        for name in ("http_port", "http_shared_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise SettingsError(f"enforcement.{name} must be 0..65535, got {getattr(self, name)}")
        self.peers()  # checked now
        if self.application_files() and self.mode == "none":
            raise SettingsError("enforcement.applications needs enforcement.mode = 'mosquitto' or 'http'")
        if self.mode == "http" and self.management_urls and (
            not self.management_user or self.management_password_file is None
        ):
            raise SettingsError(
                "enforcement.management_urls needs management_user and management_password_file"
            )
        if self.gateway_accounts not in ("endpoint", "broker"):
            raise SettingsError(
                f"enforcement.gateway_accounts must be 'endpoint' or 'broker', got {self.gateway_accounts!r}"
            )
        if self.mode == "http" and self.gateway_accounts == "broker" and not self.management_urls:
            raise SettingsError("enforcement.gateway_accounts = 'broker' needs enforcement.management_urls")
        if self.mode == "mosquitto" and (self.password_file is None or self.acl_file is None):
            raise SettingsError("enforcement.mode = 'mosquitto' needs enforcement.password_file and acl_file")
        if self.mode == "mosquitto" and self.pid_file is None and not self.reload_command:
            raise SettingsError("enforcement.mode = 'mosquitto' needs enforcement.pid_file or reload_command")
        if self.rights not in ("patterns", "per_device"):
            raise SettingsError(f"enforcement.rights must be 'patterns' or 'per_device', got {self.rights!r}")


    def application_files(self) -> dict[str, Path]:
        """``applications`` as {application name: password file}."""
        found: dict[str, Path] = {}
        for item in filter(None, (a.strip() for a in self.applications.split(","))):
            name, sep, path = (part.strip() for part in item.partition("="))
            if not sep or not topics.is_gateway_id(name) or not path:
                raise SettingsError(
                    f"enforcement.applications: {item!r} is not name=/path/to/password-file "
                    "(name: 1-32 characters of [a-z0-9-])"
                )
            if name in found:
                raise SettingsError(f"enforcement.applications: {name!r} appears twice")
            found[name] = Path(path)
        return found

    def peers(self) -> dict[str, str]:
        """``http_peers`` as {gateway id: endpoint URL}."""
        peers: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.http_peers.split(","))):
            gid, sep, url = item.partition("=")
            if not sep or not topics.is_gateway_id(gid.strip()) or not url.strip().startswith("http://"):
                raise SettingsError(f"enforcement.http_peers: {item!r} is not gateway-id=http://host:port/auth")
            peers[gid.strip()] = url.strip()
        return peers


@dataclass(frozen=True, kw_only=True)
class LedgerSettings:
    mode: str = "rpc"  # "rpc" (any EVM JSON-RPC node) or "embedded" (a local py-evm chain file)
    path: Path | None = None  # embedded chain file
    url: str = "http://127.0.0.1:8545"  # rpc
    ws_url: str = ""  # optional ws:// endpoint of the same node: new blocks wake the index sync at once
    registry: str = ""  # channel contract addresses
    auth_log: str = ""
    deployed_block: int = 0
    keystore: Path | None = None  # the gateway account's keystore (anchors, clone alerts)
    passphrase_file: Path | None = None
    confirmations: int = 0
    poll_interval: float = 0.2
    sync_timeout: float = 30.0  # one index sync; past it the next covers fewer blocks (index.SyncWindow)
    anchor_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in ("embedded", "rpc"):
            raise SettingsError(f"ledger.mode must be 'embedded' or 'rpc', got {self.mode!r}")
        if self.mode == "rpc" and not self.url:
            raise SettingsError("ledger.mode = 'rpc' needs ledger.url")
        if self.mode == "embedded" and self.path is None:
            raise SettingsError("ledger.mode = 'embedded' needs ledger.path")
        if self.confirmations < 0:
            raise SettingsError("ledger.confirmations must be >= 0")
        _positive("ledger.poll_interval", self.poll_interval)
        _positive("ledger.sync_timeout", self.sync_timeout)
        if self.ws_url and not self.ws_url.startswith(("ws://", "wss://")):
            raise SettingsError(f"ledger.ws_url must be a ws:// or wss:// URL, got {self.ws_url!r}")
        _positive("ledger.anchor_interval", self.anchor_interval)


@dataclass(frozen=True, kw_only=True)
class ProtocolSettings:
    window: int = 100
    proof_timeout: float = 10.0
    session_lifetime: int = 3600
    max_pending: int = 65536

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 100_000:
            raise SettingsError(f"protocol.window must be 1..100000, got {self.window}")
        _positive("protocol.proof_timeout", self.proof_timeout)
        if not 10 <= self.session_lifetime <= 7 * 86400:
            raise SettingsError("protocol.session_lifetime must be 10 s .. 7 days")
        if self.max_pending < 1:
            raise SettingsError("protocol.max_pending must be >= 1")


@dataclass(frozen=True, kw_only=True)
class DefenceSettings:
    device_rate: float = 2.0  # handshake messages per second per device (sustained)
    device_burst: int = 6
    global_rate: float = 20_000.0  # handshake messages per second, all devices
    global_burst: int = 40_000
    lockout_after: int = 5  # consecutive failed handshakes before a lockout
    lockout_base: float = 1.0  # seconds, doubled per further failure
    lockout_max: float = 300.0
    clone_quarantine: bool = True  # cut a device off locally when a clone is detected
    max_tracked_devices: int = 200_000
    data_rate: float = 50.0  # DATA messages per second per device, checked before the MAC
    data_burst: int = 200
    data_flood_after: int = 1_000  # refused DATA messages in one session before it is ended
    # refused pre-authentication messages (handshakes past the rate, data without a session): a
    # device's allowance refills at preauth_rate/s up to preauth_burst; past it, the broker cuts the
    # device off for preauth_ban seconds (gateway.defence.PreAuthBan)
    preauth_rate: float = 100.0
    preauth_burst: int = 5_000
    preauth_ban: float = 60.0

    def __post_init__(self) -> None:
        if self.data_burst < 1 or self.data_flood_after < 1:
            raise SettingsError("defence.data_burst and data_flood_after must be >= 1")
        if self.preauth_burst < 1:
            raise SettingsError("defence.preauth_burst must be >= 1")
        for name in ("device_rate", "global_rate", "lockout_base", "lockout_max", "data_rate", "preauth_rate",
                     "preauth_ban"):
            _positive(f"defence.{name}", getattr(self, name))
        if self.device_burst < 1 or self.global_burst < 1 or self.lockout_after < 1:
            raise SettingsError("defence bursts and lockout_after must be >= 1")


@dataclass(frozen=True, kw_only=True)
class OfflineSettings:
    max_staleness: float = 3600.0  # seconds a known device may authenticate from an index not synced

    def __post_init__(self) -> None:
        _positive("offline.max_staleness", self.max_staleness)


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 9464  # /healthz, /readyz and /metrics; 0 picks a free port (tests)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise SettingsError(f"http.port must be 0..65535, got {self.port}")


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    gateway_id: str
    state_dir: Path
    key_file: Path  # the gateway's X25519 private key (0600)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    enforcement: EnforcementSettings = field(default_factory=EnforcementSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    defence: DefenceSettings = field(default_factory=DefenceSettings)
    offline: OfflineSettings = field(default_factory=OfflineSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    audit_fsync_interval: float = 0.2

    def __post_init__(self) -> None:
        if not topics.is_gateway_id(self.gateway_id):  # the one rule, device_agent.core.topics
            raise SettingsError(f"gateway_id must be 1-32 characters of [a-z0-9-], got {self.gateway_id!r}")

    @property
    def gateway_id_bytes(self) -> bytes:
        return self.gateway_id.encode()


_SECTIONS: dict[str, type[Any]] = {
    "broker": BrokerSettings,
    "enforcement": EnforcementSettings,
    "ledger": LedgerSettings,
    "protocol": ProtocolSettings,
    "defence": DefenceSettings,
    "offline": OfflineSettings,
    "http": HttpSettings,
}


def resolve_credential(value: str, env: Mapping[str, str], where: str = "") -> Path:
    """``credential:NAME`` -> ``$CREDENTIALS_DIRECTORY/NAME`` (systemd's LoadCredential=)."""
    name = value[len(CREDENTIAL_PREFIX) :]
    if not _CREDENTIAL_NAME.fullmatch(name) or name in (".", ".."):
        raise SettingsError(f"{where}: {value!r} is not a valid credential name ([A-Za-z0-9_.-])")
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SettingsError(
            f"{where} = {value!r} needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=)"
        )
    return Path(directory) / name


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> GatewaySettings:
    """Read the TOML file (if any), apply environment overrides, and validate everything
    (``device_agent.settings``: unknown keys refused, each value typed, the key named in every error)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {} if path is None else read_toml(path)
    for name in _SECTIONS:
        raw[name] = table(raw, name)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raw[rest] = EnvText(value)
        else:
            raw[section][rest[len(section) + 1 :]] = EnvText(value)

    def credential_or_path(text: str, key: str) -> Path:
        if text.startswith(CREDENTIAL_PREFIX):
            return resolve_credential(text, env, key)
        return Path(text)

    for required in ("gateway_id", "state_dir", "key_file"):
        if required not in raw:
            raise SettingsError(
                f"missing setting {required} (in the TOML file or {ENV_PREFIX}{required.upper()})"
            )
    return build(GatewaySettings, raw, path=credential_or_path)

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def dump_settings(settings: GatewaySettings) -> str:
    """The TOML text that ``load_settings`` reads back as ``settings`` (None values left out)."""
    top: list[str] = []
    tables: list[str] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            lines = [
                f"{g.name} = {_toml_value(getattr(value, g.name))}"
                for g in dataclasses.fields(value)
                if getattr(value, g.name) is not None
            ]
            tables.append(f"\n[{f.name}]\n" + "".join(line + "\n" for line in lines))
        elif value is not None:
            top.append(f"{f.name} = {_toml_value(value)}\n")
    return "".join(top) + "".join(tables)
