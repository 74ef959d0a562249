"""Loading the gateway's secrets, and ``check-config``'s preflight: every problem names its key.

Strategy: the daemon and ``diams-gateway check-config`` load secrets through the same functions, so
the preflight cannot pass what ``run`` would refuse. A problem with a setting or a secret file is a
``ConfigurationError`` whose message starts with the setting's key (``ledger.keystore: wrong
passphrase ...``); the CLI turns it into exit status 2, which systemd's ``RestartPreventExitStatus=2``
does not restart (a restart cannot fix a wrong file). Problems that may pass (the ledger is down)
are runtime failures (exit 1, restarted). Secret values never appear in a message.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from device_agent.private import KeystoreError, check_private

from .broker import BrokerSecret
from .settings import GatewaySettings

if TYPE_CHECKING:
    from ledger_bridge.keystore import Signer

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_ZERO_ADDRESS = "0x" + "0" * 40
MIN_BROKER_PASSWORD = 16  # characters; `diams-gateway keys` makes 32


class ConfigurationError(Exception):
    """A setting or a secret file is unusable; the message starts with the setting's key."""


def _secret_bytes(key: str, path: Path) -> bytes:
    try:
        check_private(path, "file")
        return path.read_bytes()
    except KeystoreError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{key}: cannot read {path} ({exc.strerror})") from None


def read_secret_text(key: str, path: Path) -> str:
    """A secret file's text (stripped), refused when unreadable, group/other-readable or not UTF-8."""
    try:
        return _secret_bytes(key, path).decode().strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{key}: {path} is not UTF-8 text") from None


def load_key(settings: GatewaySettings) -> X25519PrivateKey:
    raw = _secret_bytes("key_file", settings.key_file)
    if len(raw) != 32:
        raise ConfigurationError(
            f"key_file: {settings.key_file} holds {len(raw)} bytes, not a 32-byte X25519 private key"
        )
    return X25519PrivateKey.from_private_bytes(raw)


def read_application_password(name: str, path: Path, setting: str = "applications") -> BrokerSecret:
    """An application account's broker password (``enforcement.applications``), or a peer gateway's
    (``setting="peer_gateways"``), checked like ours."""
    key = f"enforcement.{setting} ({name})"
    password = read_secret_text(key, path)
    if len(password) < MIN_BROKER_PASSWORD:
        raise ConfigurationError(
            f"{key}: the password in {path} has {len(password)} characters, at least {MIN_BROKER_PASSWORD} "
            "are needed"
        )
    try:
        return BrokerSecret(password)
    except ValueError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None


def read_broker_password(settings: GatewaySettings) -> str | None:
    path = settings.broker.password_file
    if path is None:
        return None
    try:
        password = _secret_bytes("broker.password_file", path).decode().strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"broker.password_file: {path} is not UTF-8 text") from None
    if len(password) < MIN_BROKER_PASSWORD:
        raise ConfigurationError(
            f"broker.password_file: the password in {path} has {len(password)} characters, "
            f"at least {MIN_BROKER_PASSWORD} are needed ('diams-gateway keys' makes one)"
        )
    return password


def load_ledger_signer(settings: GatewaySettings) -> Signer | None:
    """The gateway account's Signer from ``ledger.keystore``, or None when none is configured."""
    s = settings.ledger
    if s.keystore is None:
        return None
    if s.passphrase_file is None:
        raise ConfigurationError("ledger.passphrase_file: required with ledger.keystore")
    from ledger_bridge import load_signer

    try:
        passphrase = _secret_bytes("ledger.passphrase_file", s.passphrase_file).decode().strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"ledger.passphrase_file: {s.passphrase_file} is not UTF-8 text") from None
    _secret_bytes("ledger.keystore", s.keystore)
    try:
        return load_signer(s.keystore, passphrase)
    except KeystoreError as exc:
        raise ConfigurationError(f"ledger.keystore: {exc} (with ledger.passphrase_file)") from None


def check_addresses(settings: GatewaySettings) -> None:
    for key in ("registry", "auth_log"):
        value = getattr(settings.ledger, key)
        if not value:
            raise ConfigurationError(f"ledger.{key}: missing (the channel's contract address)")
        if not _ADDRESS.fullmatch(value) or value == _ZERO_ADDRESS:
            raise ConfigurationError(f"ledger.{key}: {value[:50]!r} is not a contract address (0x + 40 hex)")
        from web3 import Web3

        if value != value.lower() and value[2:] != value[2:].upper() and not Web3.is_checksum_address(value):
            raise ConfigurationError(f"ledger.{key}: {value} has a wrong EIP-55 checksum (a typo?)")


def check_static(settings: GatewaySettings) -> tuple[X25519PrivateKey, Signer | None]:
    """Everything that needs no network: secret files, key lengths, addresses. -> (key, signer)."""
    key = load_key(settings)
    read_broker_password(settings)
    for name, path in settings.enforcement.application_files().items():
        read_application_password(name, path)
    for gid, path in settings.enforcement.peer_gateway_files().items():
        read_application_password(gid, path, "peer_gateways")
    settings.broker.tls_context()  # broker.tls_ca: a readable CA file
    check_addresses(settings)
    return key, load_ledger_signer(settings)


async def check_ledger(settings: GatewaySettings, key: X25519PrivateKey, signer: Signer | None) -> str:
    """Reach the ledger and confirm this gateway is registered with this key (and account)."""
    from ledger_bridge.errors import ChannelError, LedgerError, LedgerRevert
    from ledger_bridge.index import onchain_gateway_id

    from .ledger_link import build_ledger

    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        async with asyncio.timeout(30):
            async with build_ledger(settings.ledger) as ledger:
                record = await ledger.gateway(onchain_gateway_id(settings.gateway_id_bytes))
                head = await ledger.block_number()
    except TimeoutError:
        raise LedgerUnreachable("ledger: no answer within 30 s") from None
    except LedgerRevert as exc:
        if exc.error == "UnknownGateway":
            raise ConfigurationError(
                f"gateway_id: {settings.gateway_id!r} is not registered on this ledger's registry"
            ) from None
        raise ConfigurationError(f"ledger.registry: the registry refused the look-up ({exc.error})") from None
    except ChannelError as exc:
        raise ConfigurationError(f"ledger.registry / ledger.auth_log: {exc}") from None
    except LedgerError as exc:
        raise LedgerUnreachable(f"ledger: {exc}") from None
    if record.account == _ZERO_ADDRESS or int(record.account, 16) == 0:
        raise ConfigurationError(
            f"gateway_id: {settings.gateway_id!r} is not registered on this ledger's registry"
        )
    if record.x25519_public_key != public:
        raise ConfigurationError(
            f"key_file: its public key does not match the one registered for gateway {settings.gateway_id!r}"
        )
    if signer is not None and signer.address.lower() != record.account.lower():
        raise ConfigurationError(
            f"ledger.keystore: account {signer.address} is not gateway {settings.gateway_id!r}'s account "
            f"{record.account}"
        )
    return f"registered (account {record.account}), ledger at block {head}"


class LedgerUnreachable(Exception):
    """check-config could not reach the ledger (a runtime problem: exit 1)."""
