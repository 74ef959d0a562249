"""X25519 on CPython through `cryptography` (one C call), with the calling convention of the protocol
core's re-keying module (``device_agent.core.rekey``): ``x25519(k, u) -> 32 bytes``. MicroPython uses the
core's pure-Python ``device_agent.core.x25519`` instead; both are checked against RFC 7748."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = ["BASE", "x25519"]

BASE = b"\x09" + bytes(31)


def x25519(k: bytes, u: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(k)
    if u == BASE:
        return key.public_key().public_bytes_raw()
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(u))
    except ValueError:  # a low-order point: the all-zero result, which the core refuses as the pure one does
        return bytes(32)
