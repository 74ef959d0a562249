"""Manufacture-time provisioning: the embedded secret, the registration record, the owner's bundle.

Writes into ``out``:

* ``<id>.key``          S as hex, 0600: flashed into the device (the agent's ``key_file``);
* ``<id>.key.x25519``   the device's static X25519 private key, 0600, flashed with it (re-keying at
                        transfer, docs/PROTOCOL.md 2.3); its public half goes into the record and CSV;
* ``<id>.owner.json``   0600, handed to the owner with the device: S, the commitment salt, the claim
                        code and the characteristics (to open the commitment later);
* ``<id>.json``         the public registration record;
* ``registration.csv``  one row appended per device, the columns of ``diams-ledger register --csv``
                        (``ledger_bridge/csv_import.py``): device_id, model, firmware_hash,
                        characteristics, claim_hash, device_key (registered with the device);
* ``<id>.agent.toml``   a starting agent configuration.

Nothing secret is printed: stdout gets the public record only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from . import _core
from .keystore import DeviceSecret, save_secret, write_private
from .rekey import static_key_path
from .x25519 import x25519

_BASE = b"\x09" + bytes(31)

__all__ = ["CSV_COLUMNS", "Provisioned", "RegistrationRecord", "parse_mac", "provision"]

CSV_COLUMNS = ("device_id", "model", "firmware_hash", "characteristics", "claim_hash", "device_key")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")


def parse_mac(text: str) -> bytes:
    if not _MAC.match(text.strip()):
        raise ValueError("MAC address must look like AA:BB:CC:DD:EE:FF")
    return bytes.fromhex(re.sub(r"[:-]", "", text.strip()))


@dataclass(frozen=True, kw_only=True)
class RegistrationRecord:
    """What the manufacturer registers on the ledger (public)."""

    device_id: str
    model: str
    firmware_hash: str
    characteristics: str
    claim_hash: str
    device_key: str  # 0x + the device's static X25519 public key (PROTOCOL.md 2.3)

    def as_row(self) -> list[str]:
        return [getattr(self, c) for c in CSV_COLUMNS]


@dataclass(frozen=True, kw_only=True)
class Provisioned:
    record: RegistrationRecord
    key_file: Path
    owner_file: Path
    record_file: Path
    csv_file: Path
    config_file: Path


def provision(*, model: str, serial: str, mac: str, firmware: Path, out: Path,
              gateways: tuple[str, ...] = ("gw-1",), broker_host: str = "127.0.0.1",
              broker_port: int = 1883) -> Provisioned:
    if not model or len(model.encode()) > 32:
        raise ValueError("model must be 1-32 bytes of text (a bytes32 on the ledger)")
    if not serial or len(serial.encode()) > 255:
        raise ValueError("serial must be 1-255 bytes")
    mac_bytes = parse_mac(mac)
    fw_hash = hashlib.sha256(firmware.read_bytes()).digest()
    secret = DeviceSecret(secrets.token_bytes(_core.SECRET_LEN))
    salt = secrets.token_bytes(_core.SALT_LEN)
    claim_code = secrets.token_hex(16)
    did = _core.derive_device_id(secret.reveal(), model, serial, mac_bytes)
    commitment = _core.characteristics_commitment(salt, model, serial, mac_bytes, fw_hash)
    # The static key pair is made here, on the provisioning station, and flashed with S: a board that can
    # make it itself at first boot (device_agent.micropython.rekey.make_device_key) keeps the private
    # half from ever leaving it; the manufacturer registers the public half either way.
    static = secrets.token_bytes(32)
    record = RegistrationRecord(
        device_id=did.hex(),
        model=model,
        firmware_hash="0x" + fw_hash.hex(),
        characteristics="0x" + commitment.hex(),
        claim_hash="0x" + _core.claim_hash(did, claim_code.encode()).hex(),
        device_key="0x" + x25519(static, _BASE).hex(),
    )
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / f"{did.hex()}.key"
    save_secret(key_file, secret)
    write_private(static_key_path(key_file), static.hex().encode() + b"\n")
    owner = {
        "device_id": did.hex(), "secret": secret.reveal().hex(), "salt": salt.hex(), "claim_code": claim_code,
        "model": model, "serial": serial, "mac": mac_bytes.hex(":"), "firmware_hash": fw_hash.hex(),
    }
    owner_file = out / f"{did.hex()}.owner.json"
    write_private(owner_file, (json.dumps(owner, indent=2) + "\n").encode())
    record_file = out / f"{did.hex()}.json"
    record_file.write_text(json.dumps(record.__dict__, indent=2) + "\n")
    csv_file = out / "registration.csv"
    new = not csv_file.exists()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if new:
        writer.writerow(CSV_COLUMNS)
    writer.writerow(record.as_row())
    with csv_file.open("a", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
    config_file = out / f"{did.hex()}.agent.toml"
    config_file.write_text(
        "[device]\n"
        f'id = "{did.hex()}"\n'
        f'key_file = "{key_file.name}"\n'
        f'state_file = "{did.hex()}.state.json"\n'
        f'firmware_hash = "{fw_hash.hex()}"\n'
        "epoch = 0\n\n"
        "[broker]\n"
        f'host = "{broker_host}"\nport = {broker_port}\n\n'
        "[gateways]\n"
        f"ids = [{', '.join(json.dumps(g) for g in gateways)}]\n"
        "answer_timeout_s = 5.0\n\n"
        "# What the device publishes, once authenticated: each stream must be allowed by the device's\n"
        "# policy on the ledger (diams-ledger define-policy NAME --publish telemetry).\n"
        "[[streams]]\n"
        'name = "telemetry"\n'
        'source = "/proc/loadavg"                 # the file whose content is sent\n'
        "interval_s = 30\n"
    )
    return Provisioned(record=record, key_file=key_file, owner_file=owner_file, record_file=record_file,
                       csv_file=csv_file, config_file=config_file)
