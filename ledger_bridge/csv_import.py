"""Batch registration from CSV: every row is checked on its own, and a bad row never loses the others.

CSV columns (header required): `device_id` (16 hex digits), `model` (text of at most 32 bytes, or 0x + 64
hex), `firmware_hash`, `characteristics` (0x + 64 hex each), and `claim_hash` (0x + 64 hex) or `claim_code`
(text; hashed here as the protocol core does, and never printed); optionally `device_key` (the device's
static X25519 public key, 0x + 64 hex, made by `diams-agent provision`), registered right after its device
(`registerDeviceKey`) so that a later owner can re-key it (docs/PROTOCOL.md 2.3).

Strategy: rows that fail local checks are reported at once; the rest go on chain in batches. When the
chain refuses a batch because of one device (`DeviceExists`), that row is reported and the batch is sent
again without it, so one duplicate costs one extra transaction rather than a transaction per row.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from device_agent.core.identity import claim_hash as _core_claim_hash

from .actor import ActorHandle
from .errors import LedgerRevert
from .model import DeviceRegistration, check_device_id

#: sha256("diams/v1/claim" || id || code), from the protocol core: the formula the contract checks.
claim_hash: Callable[[bytes, bytes], bytes] = _core_claim_hash


@dataclass(frozen=True, kw_only=True)
class RowError:
    line: int
    device_id: str
    reason: str


@dataclass(kw_only=True)
class ImportReport:
    registered: int = 0
    transactions: int = 0
    errors: list[RowError] = field(default_factory=list)


def parse_bytes32(text: str, *, name: str, allow_text: bool = False) -> bytes:
    """0x + 64 hex digits; with `allow_text`, also UTF-8 text of at most 32 bytes, zero-padded."""
    value = text.strip()
    if value.startswith("0x"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise ValueError(f"{name} is not hex") from None
        if len(raw) != 32:
            raise ValueError(f"{name} must be 32 bytes")
        return raw
    if allow_text and value:
        raw = value.encode()
        if len(raw) > 32:
            raise ValueError(f"{name} is longer than 32 bytes")
        return raw.ljust(32, b"\0")
    raise ValueError(f"{name} must be 0x followed by 64 hex digits")


def parse_device_id(text: str) -> bytes:
    value = text.strip().removeprefix("0x")
    try:
        return check_device_id(bytes.fromhex(value))
    except ValueError:
        raise ValueError("device_id must be 16 hex digits, not all zero") from None


def read_rows(path: Path) -> tuple[list[tuple[int, DeviceRegistration]], list[RowError]]:
    """Parse the CSV at `path`; returns the good rows (with their line numbers) and the bad ones."""
    good: list[tuple[int, DeviceRegistration]] = []
    bad: list[RowError] = []
    seen: dict[bytes, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"device_id", "model", "firmware_hash", "characteristics"} - set(reader.fieldnames or ())
        if missing or not ({"claim_hash", "claim_code"} & set(reader.fieldnames or ())):
            raise ValueError(
                "CSV header needs device_id, model, firmware_hash, characteristics, "
                "and claim_hash or claim_code"
            )
        for row in reader:
            line = reader.line_num
            raw_id = (row.get("device_id") or "").strip()
            try:
                dev = parse_device_id(raw_id)
                if dev in seen:
                    raise ValueError(f"duplicate of line {seen[dev]}")
                if row.get("claim_hash"):
                    ch = parse_bytes32(row["claim_hash"], name="claim_hash")
                elif row.get("claim_code"):
                    ch = claim_hash(dev, row["claim_code"].encode())
                else:
                    raise ValueError("claim_hash or claim_code is required")
                registration = DeviceRegistration(
                    device_id=dev,
                    model=parse_bytes32(row.get("model") or "", name="model", allow_text=True),
                    firmware_hash=parse_bytes32(row.get("firmware_hash") or "", name="firmware_hash"),
                    characteristics=parse_bytes32(row.get("characteristics") or "", name="characteristics"),
                    claim_hash=ch,
                    device_key=(
                        parse_bytes32(row["device_key"], name="device_key") if row.get("device_key") else None
                    ),
                )
            except ValueError as exc:
                bad.append(RowError(line=line, device_id=raw_id, reason=str(exc)))
                continue
            seen[dev] = line
            good.append((line, registration))
    return good, bad


async def register_rows(
    actor: ActorHandle,
    rows: Sequence[tuple[int, DeviceRegistration]],
    *,
    batch_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Register `rows` in batches; a row the chain refuses is reported and dropped, the rest go on."""
    report = ImportReport()
    done = 0
    # one transaction per batch, so a refusal is exactly about the rows of that batch
    batch_size = max(1, min(batch_size, await actor.batch_limit()))
    for batch in _batches(rows, batch_size):
        pending = list(batch)
        while pending:
            try:
                outcomes = await actor.register_many([r for _, r in pending], batch_size=len(pending))
            except LedgerRevert as exc:
                culprit = exc.args_by_name.get("id")
                index = next((i for i, (_, r) in enumerate(pending) if r.device_id == culprit), None)
                if index is None:  # not attributable to one row: the whole batch fails
                    report.errors.extend(
                        RowError(line=line, device_id=r.device_id.hex(), reason=str(exc))
                        for line, r in pending
                    )
                    done += len(pending)
                    break
                line, r = pending.pop(index)
                report.errors.append(RowError(line=line, device_id=r.device_id.hex(), reason=str(exc)))
                done += 1
                continue
            report.registered += len(pending)
            report.transactions += len(outcomes)
            done += len(pending)
            keyed = [(line, r) for line, r in pending if r.device_key is not None]
            await _register_keys(actor, keyed, report)
            pending = []
        if progress is not None:
            progress(done, len(rows))
    return report


async def _register_keys(
    actor: ActorHandle, keyed: list[tuple[int, DeviceRegistration]], report: ImportReport
) -> None:
    """The batch's device keys in one ``registerDeviceKeyMany`` transaction (all or none): a refused row
    (the revert names its device) is reported and the others are sent again without it."""
    while keyed:
        try:
            outcomes = await actor.register_device_key_many(
                [r.device_id for _, r in keyed], [r.device_key or b"" for _, r in keyed]
            )
        except LedgerRevert as exc:
            culprit = exc.args_by_name.get("id")
            index = next((i for i, (_, r) in enumerate(keyed) if r.device_id == culprit), None)
            failed = keyed if index is None else [keyed.pop(index)]
            report.errors.extend(
                RowError(line=line, device_id=r.device_id.hex(), reason=f"device key: {exc}")
                for line, r in failed
            )
            if index is None:
                return
            continue
        report.transactions += len(outcomes)
        return


def _batches(
    rows: Sequence[tuple[int, DeviceRegistration]], size: int
) -> Iterable[list[tuple[int, DeviceRegistration]]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])
