"""The device's side of re-keying at transfer, on the Raspberry Pi agent (docs/PROTOCOL.md 2.3).

The device's static X25519 key pair lives beside the secret: ``<key_file>.x25519`` (0600, the private
key as hex), made once at manufacture (``diams-agent device-key``, which prints the public key for the
manufacturer's ``registerDeviceKey``). ``diams-agent rekey`` runs one exchange over standard input and
output (hex lines: INIT in, REPLY out, CONFIRM in), the console or serial line the new owner's tool talks
to, and replaces S by S' (atomically, 0600) only after the owner's confirmation verifies. The protocol
itself is ``device_agent.core.rekey``; this module only moves bytes and files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from device_agent.core import rekey

from .keystore import DeviceSecret, KeystoreError, check_private, load_secret, save_secret, write_private
from .x25519 import x25519

__all__ = ["device_public_key", "run_rekey", "static_key_path"]

_BASE = b"\x09" + bytes(31)


def static_key_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".x25519")


def device_public_key(key_file: Path, *, create: bool = False) -> bytes:
    """The device's static X25519 public key (made with ``create`` when absent; never replaced)."""
    path = static_key_path(key_file)
    if not path.exists():
        if not create:
            raise KeystoreError(f"no device key at {path} (made at manufacture: diams-agent device-key)")
        write_private(path, os.urandom(32).hex().encode() + b"\n")
    public: bytes = x25519(_load_static(path), _BASE)
    return public


def _load_static(path: Path) -> bytes:
    check_private(path)
    try:
        raw = bytes.fromhex(path.read_text(encoding="ascii", errors="replace").strip())
    except ValueError:
        raise KeystoreError(f"device key {path} does not hold hex digits") from None
    if len(raw) != 32:
        raise KeystoreError(f"device key {path} must hold 32 bytes as hex")
    return raw


def run_rekey(
    key_file: Path, device_id: bytes, read_line: Callable[[], str], write_line: Callable[[str], None]
) -> None:
    """One exchange: INIT from ``read_line``, REPLY to ``write_line``, CONFIRM from ``read_line``; on
    success S' replaces S in ``key_file``. Raises ``rekey.RekeyError`` (S unchanged) otherwise."""
    secret = load_secret(key_file)
    role = rekey.DeviceRekey(
        device_id,
        secret.reveal(),
        _load_static(static_key_path(key_file)),
        x25519,
        os.urandom,
    )
    write_line(role.init(_hex(read_line())).hex())
    save_secret(key_file, DeviceSecret(role.confirm(_hex(read_line()))))


def _hex(line: str) -> bytes:
    try:
        return bytes.fromhex(line.strip())
    except ValueError:
        raise rekey.RekeyError("bad_message") from None
