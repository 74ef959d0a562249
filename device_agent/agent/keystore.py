"""The device secret S on disk: one 0600 file, refused when group- or world-accessible
(``device_agent.private`` writes and checks every secret file).

The file holds S as 64 hex digits (a trailing newline is allowed). ``DeviceSecret`` wraps the bytes
so that they never show up in a repr, a log line or an exception message.
"""

from __future__ import annotations

from pathlib import Path

from ..private import KeystoreError, check_private, write_private
from ._core import SECRET_LEN

__all__ = ["DeviceSecret", "KeystoreError", "check_private", "load_secret", "save_secret", "write_private"]


class DeviceSecret:
    """S, 32 bytes. ``reveal()`` hands the bytes to the protocol core; reprs show nothing."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) != SECRET_LEN:
            raise KeystoreError(f"a device secret is {SECRET_LEN} bytes")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "DeviceSecret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a device secret is not picklable")


def load_secret(path: Path) -> DeviceSecret:
    check_private(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise KeystoreError(f"key file {path} does not hold hex digits") from None
    if len(raw) != SECRET_LEN:
        raise KeystoreError(f"key file {path} must hold {SECRET_LEN} bytes as hex")
    return DeviceSecret(raw)


def save_secret(path: Path, secret: DeviceSecret) -> None:
    write_private(path, secret.reveal().hex().encode() + b"\n")
