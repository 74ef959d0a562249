"""Typed entry points into the protocol core for this package (the core itself is untyped: it must
also run on MicroPython, which has no ``typing``). Calls go through ``Any`` so strict mypy checks
this package's side of each call without requiring annotations in the core."""

from __future__ import annotations

from typing import Any

from device_agent.core import device as _device
from device_agent.core import identity as _identity
from device_agent.core import keys as _keys
from device_agent.core import wire as _wire

_K: Any = _keys
_I: Any = _identity
_D: Any = _device
_W: Any = _wire

SECRET_LEN: int = _K.SECRET_LEN
SALT_LEN: int = _I.SALT_LEN


def gateway_key(secret: bytes, device_id: bytes, gateway_id: bytes, epoch: int,
                firmware_hash: bytes) -> bytes:
    return bytes(_K.gateway_key(secret, device_id, gateway_id, epoch, firmware_hash))


def broker_password(secret: bytes, device_id: bytes, epoch: int) -> str:
    return str(_K.broker_password(secret, device_id, epoch))


def derive_device_id(secret: bytes, model: str, serial: str, mac: bytes) -> bytes:
    return bytes(_I.derive_device_id(secret, model, serial, mac))


def characteristics_commitment(salt: bytes, model: str, serial: str, mac: bytes,
                               firmware_hash: bytes) -> bytes:
    return bytes(_I.characteristics_commitment(salt, model, serial, mac, firmware_hash))


def claim_hash(device_id: bytes, claim_code: bytes) -> bytes:
    return bytes(_I.claim_hash(device_id, claim_code))


def device_role(device_id: bytes, gateway_id: bytes, k_dg: bytes, epoch: int) -> Any:
    """A fresh ``DeviceRole`` (one per handshake attempt)."""
    return _D.DeviceRole(device_id, gateway_id, k_dg, epoch)


def no_session_signal(payload: bytes) -> bool:
    """Whether a handshake-topic message is a gateway's "no session for you" signal."""
    return bool(_W.no_session_signal(payload))
