"""The device's side of re-keying at transfer, on the Raspberry Pi agent (docs/PROTOCOL.md 2.3).

The device's static X25519 key pair lives beside the secret: ``<key_file>.x25519`` (0600, the private
key as hex), made once at manufacture (``diams-agent device-key``, which prints the public key for the
manufacturer's ``registerDeviceKey``; ``diams-agent provision`` makes it too). The running agent answers
a re-key over MQTT (``RekeyResponder``, fed by the driver from its re-key ``down`` topics,
``topics.rekey_down``, its REPLY and DONE published on ``topics.rekey_up``); ``diams-agent rekey`` runs
one exchange over standard input and output instead (hex lines: INIT in, REPLY out, CONFIRM in, DONE
out), for a console or serial line. Either way S is replaced by S' (atomically, 0600) only after the
owner's confirmation verifies, and DONE (the proof of that commit, which lets the owner record
``confirmRekey``) leaves only after the commit is on disk. The protocol itself is
``device_agent.core.rekey``; this module only moves bytes and files.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path

from device_agent.core import rekey

from .keystore import DeviceSecret, KeystoreError, check_private, load_secret, save_secret, write_private
from .x25519 import x25519

__all__ = ["RekeyResponder", "device_public_key", "run_rekey", "static_key_path"]

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
    success S' replaces S in ``key_file``, then DONE goes to ``write_line``. Raises ``rekey.RekeyError``
    (S unchanged) otherwise."""
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
    write_line(role.done().hex())  # only now: the commit is durable


def _hex(line: str) -> bytes:
    try:
        return bytes.fromhex(line.strip())
    except ValueError:
        raise rekey.RekeyError("bad_message") from None


class RekeyResponder:
    """The device's side of one re-key at a time, message by message (the MQTT agent's driver feeds it).

    ``message(secret, payload) -> (answer or None, S' or None)``: an INIT gets a REPLY; the CONFIRM that
    verifies commits S' to ``key_file`` (durably, before it is returned) and gets DONE, the proof of that
    commit. A QoS 1 duplicate of the pending INIT gets the same REPLY again (a fresh one would make the
    owner's CONFIRM fail), and a repeat of the CONFIRM last committed the same DONE (the owner's tool
    sends CONFIRM again until DONE arrives). Raises ``rekey.RekeyError`` (nothing changed) or
    ``KeystoreError`` (no device key)."""

    def __init__(self, key_file: Path, device_id: bytes, random: Callable[[int], bytes] = os.urandom) -> None:
        self._key_file = key_file
        self._device_id = device_id
        self._random = random
        self._role: rekey.DeviceRekey | None = None
        self._init: tuple[bytes, bytes] | None = None  # (INIT, our REPLY) of the pending exchange
        self._done: tuple[bytes, bytes] | None = None  # (CONFIRM, our DONE) of the last commit

    def __repr__(self) -> str:
        return f"RekeyResponder({self._device_id.hex()}, pending={self._role is not None})"

    def message(self, secret: bytes, payload: bytes) -> tuple[bytes | None, bytes | None]:
        kind = payload[0] if payload else -1
        if kind == rekey.INIT:
            if self._init is not None and hmac.compare_digest(payload, self._init[0]):
                return self._init[1], None
            fresh = rekey.DeviceRekey(
                self._device_id, secret, _load_static(static_key_path(self._key_file)), x25519, self._random
            )
            reply: bytes = fresh.init(payload)
            self._role, self._init = fresh, (payload, reply)
            return reply, None
        if kind == rekey.CONFIRM:
            if self._done is not None and hmac.compare_digest(payload, self._done[0]):
                return self._done[1], None  # committed already: DONE again (the first may be lost)
            pending, self._role, self._init = self._role, None, None
            if pending is None:
                raise rekey.RekeyError("not_started")
            new_secret: bytes = pending.confirm(payload)
            save_secret(self._key_file, DeviceSecret(new_secret))
            done: bytes = pending.done()  # only after the commit is on disk
            self._done = (payload, done)
            return done, new_secret
        raise rekey.RekeyError("bad_message")
