"""Test data for the ledger suite: registrations whose claim codes the tests know."""

from __future__ import annotations

import hashlib
import os

from device_agent.core.identity import claim_hash
from ledger_bridge import DeviceRegistration
from ledger_bridge.sealing import SEALED_LEN

MODEL = b"diams-sensor-v1".ljust(32, b"\0")
FIRMWARE = hashlib.sha256(b"firmware 1.0.0").digest()


def device_id(n: int, tag: int = 0xD1) -> bytes:
    return bytes([tag]) + n.to_bytes(7, "big")


def claim_code(dev: bytes) -> bytes:
    return b"code-" + dev.hex().encode()


def registration(dev: bytes) -> DeviceRegistration:
    return DeviceRegistration(
        device_id=dev,
        model=MODEL,
        firmware_hash=FIRMWARE,
        characteristics=hashlib.sha256(b"salted characteristics " + dev).digest(),
        claim_hash=claim_hash(dev, claim_code(dev)),
    )


def gateway_id(n: int) -> bytes:
    return hashlib.sha256(b"gateway %d" % n).digest()


def sealed_key() -> bytes:
    """Stand-in for a sealed key (ledger_bridge.sealing): opaque bytes of the real length."""
    return os.urandom(SEALED_LEN)


def commitment(data: bytes) -> bytes:
    return hashlib.sha256(b"commit" + data).digest()
