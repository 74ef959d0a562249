"""Gas budgets and batch sizes of the channel's transactions, shared by ``Ledger`` and ``ActorHandle``
(its own module so that neither imports the other at run time)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

__all__ = ["BATCH_GAS", "CALL_GAS", "GAS_BUDGETS", "MAX_BATCH", "chunks"]

T = TypeVar("T")

#: Gas limit per operation: measured gas (docs/LEDGER.md) plus a margin. Batches: (base, per item).
GAS_BUDGETS: Mapping[str, int] = {
    "deployRegistry": 3_800_000,
    "deployAuthLog": 900_000,
    "grantRole": 120_000,
    "revokeRole": 80_000,
    "registerDevice": 220_000,
    "claim": 120_000,
    "activate": 80_000,
    "suspend": 80_000,
    "transfer": 120_000,
    "acceptTransfer": 80_000,
    "cancelTransfer": 80_000,
    "revoke": 80_000,
    "decommission": 80_000,
    "approveMaintainer": 100_000,
    "recordFirmware": 100_000,
    "registerGateway": 160_000,
    "authorizeGateway": 260_000,
    "deauthorizeGateway": 100_000,
    "definePolicy": 500_000,
    "sharePolicy": 80_000,
    "setPolicy": 100_000,
    "useSharedPolicy": 100_000,
    "rotateGatewayKey": 80_000,
    "changeGatewayAccount": 80_000,
    "removeGateway": 80_000,
    "registerDeviceKey": 80_000,
    "confirmRekey": 80_000,
    "startRekey": 80_000,
    "anchor": 200_000,
    "cloneAlert": 100_000,
}
BATCH_GAS: Mapping[str, tuple[int, int]] = {
    "registerMany": (60_000, 130_000),
    "authorizeGatewayMany": (60_000, 150_000),
    "onboardMany": (60_000, 110_000),
    "recordFirmwareMany": (60_000, 30_000),
    "registerDeviceKeyMany": (60_000, 40_000),
}
#: Gas of a view call: generous for every view here, small enough that an in-process EVM (which checks
#: that the caller could pay for it) accepts a modestly funded caller.
CALL_GAS = 1_000_000
#: ``grantStatus`` view calls: devices x (1 + gateways) per call, to stay well inside CALL_GAS (about 8,000
#: gas per cell measured with two gateways, every grant present; tests/ledger/test_firmware_batch.py).
GRANT_STATUS_CELLS = 72
#: Devices per registerMany transaction (FACTS: ~200 per transaction fits a 30M gas block).
MAX_BATCH = 200


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
