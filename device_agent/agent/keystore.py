"""The device secret S on disk: one 0600 file, refused when group- or world-accessible.

The file holds S as 64 hex digits (a trailing newline is allowed). ``DeviceSecret`` wraps the bytes
so that they never show up in a repr, a log line or an exception message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._core import SECRET_LEN

__all__ = ["DeviceSecret", "KeyStoreError", "load_secret", "write_private"]


class KeyStoreError(Exception):
    """The key file is missing, malformed or too widely readable (the message never quotes it)."""


class DeviceSecret:
    """S, 32 bytes. ``reveal()`` hands the bytes to the protocol core; reprs show nothing."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) != SECRET_LEN:
            raise KeyStoreError(f"a device secret is {SECRET_LEN} bytes")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "DeviceSecret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a device secret is not picklable")


def check_private(path: Path) -> None:
    """Refuse a file that the group or others may read, write or execute."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyStoreError(f"key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyStoreError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyStoreError(
            f"key file {path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            " chmod 600 it"
        )


def load_secret(path: Path) -> DeviceSecret:
    check_private(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise KeyStoreError(f"key file {path} does not hold hex digits") from None
    if len(raw) != SECRET_LEN:
        raise KeyStoreError(f"key file {path} must hold {SECRET_LEN} bytes as hex")
    return DeviceSecret(raw)


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never briefly wider), atomically, fsync'd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_secret(path: Path, secret: DeviceSecret) -> None:
    write_private(path, secret.reveal().hex().encode() + b"\n")
