"""Simulated devices' identities on disk: what the manufacturer provisioned, secrets included.

A JSON list in a 0600 file (the run directory of a demo, never the repository): the simulator needs
each device's secret to act as that device, exactly as the owner's key store holds it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from device_agent.private import check_private, write_private
from ledger_bridge.enrollment import ProvisionedDevice

__all__ = ["load_identities", "save_identities"]

_BYTES = ("secret", "mac", "firmware_hash", "salt", "claim_code")


def save_identities(path: Path, devices: Sequence[ProvisionedDevice]) -> None:
    rows = [
        {"model": d.model, "serial": d.serial, **{k: getattr(d, k).hex() for k in _BYTES}} for d in devices
    ]
    write_private(path, json.dumps(rows).encode())


def load_identities(path: Path) -> list[ProvisionedDevice]:
    check_private(path, "identity file")  # it holds device secrets
    rows = json.loads(path.read_text())
    return [
        ProvisionedDevice(model=r["model"], serial=r["serial"], **{k: bytes.fromhex(r[k]) for k in _BYTES})
        for r in rows
    ]
