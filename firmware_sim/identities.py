"""Simulated devices' identities on disk: what the manufacturer provisioned, secrets included.

A JSON list in a 0600 file (the run directory of a demo, never the repository): the simulator needs
each device's secret to act as that device, exactly as the owner's key store holds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ledger_bridge.enrollment import ProvisionedDevice

__all__ = ["load_identities", "save_identities"]

_BYTES = ("secret", "mac", "firmware_hash", "salt", "claim_code")


def save_identities(path: Path, devices: Sequence[ProvisionedDevice]) -> None:
    rows = [
        {"model": d.model, "serial": d.serial, **{k: getattr(d, k).hex() for k in _BYTES}} for d in devices
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(rows, f)


def load_identities(path: Path) -> list[ProvisionedDevice]:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} holds device secrets: it must not be group- or world-readable")
    rows = json.loads(path.read_text())
    return [
        ProvisionedDevice(model=r["model"], serial=r["serial"], **{k: bytes.fromhex(r[k]) for k in _BYTES})
        for r in rows
    ]
