"""Every actor's workflow as operations: one home shared by `diams-ledger` and `diams-console`.

Strategy: the command line and the console are thin adapters. Each operation here takes an open
`Ledger` (reads) and an `ActorHandle` (writes, signed by the actor's own key), checks what can be
checked locally first (so a batch reports row by row instead of failing whole on chain), and returns
plain values that both adapters render: text on a terminal, JSON for `--json` and the REST API, HTML
on a page. Nobody writes an operation twice.

Names: gateway and policy ids are bytes32 on chain; people use short names ("gw-1", "sensors"),
zero-padded to 32 bytes, or `0x` + 64 hex digits for ids made any other way.
"""

from __future__ import annotations

import csv
import json
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent.core import identity

from .audit_trail import records
from .csv_import import parse_bytes32, parse_device_id
from .enrollment import ProvisionedDevice
from .errors import LedgerError, LedgerRevert
from .model import (
    ZERO_ADDRESS,
    DeviceRecord,
    DeviceState,
    GrantRecord,
    LedgerEvent,
    PolicyRecord,
    TxOutcome,
)
from .sealing import seal

if TYPE_CHECKING:
    from .actor import ActorHandle
    from .index import IdentityIndex
    from .ledger import Ledger

__all__ = [
    "ACTIONS",
    "Action",
    "DeviceDetail",
    "GatewayInfo",
    "GatewayRemoval",
    "OnboardReport",
    "OnboardRow",
    "OwnerBundle",
    "RekeyPending",
    "RowError",
    "TimelineEntry",
    "authentications",
    "authorize_from_bundle",
    "define_policy",
    "device_detail",
    "find_gateway",
    "gateway_info",
    "id_text",
    "jsonable",
    "live_gateway",
    "name_id",
    "onboard_rows",
    "policy_info",
    "read_onboard_csv",
    "recover_after_clone",
    "register_gateway",
    "rekey_pending",
    "run_action",
]


# ---- names ----
def name_id(text: str, *, what: str) -> bytes:
    """A gateway or policy name (at most 32 bytes of text) or 0x + 64 hex -> the contracts' bytes32."""
    return parse_bytes32(text, name=what, allow_text=True)


_PRINTABLE = frozenset(string.ascii_letters + string.digits + string.punctuation + " ")


def id_text(value: bytes) -> str:
    """bytes32 -> the name it was made from, when it is zero-padded printable text; else 0x + hex."""
    raw = value.rstrip(b"\0")
    text = raw.decode("ascii", "replace")
    if raw and all(c in _PRINTABLE for c in text) and b"\0" not in raw:
        return text
    return "0x" + value.hex()


def jsonable(value: Any) -> Any:
    """Values of this package as JSON: bytes as 0x-hex, states by label, dataclasses as objects."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, DeviceState):
        return value.label
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {
            k: jsonable(getattr(value, k))
            for k, f in value.__dataclass_fields__.items()
            if f.repr  # fields hidden from reprs are secrets: never rendered either
        }
    return value


# ---- the owner's device bundle (`diams-agent provision` writes <id>.owner.json) ----
@dataclass(frozen=True, kw_only=True)
class OwnerBundle:
    """What the owner receives with a device: enough to claim it and to seal its keys to gateways."""

    device_id: bytes
    model: str
    serial: str
    mac: bytes
    firmware_hash: bytes
    secret: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    claim_code: bytes = field(repr=False)
    #: S' once the owner re-keyed the device (``diams-ledger rekey`` writes it into the bundle)
    rekeyed_secret: bytes | None = field(default=None, repr=False)
    #: the secret (not ``secret``) the device answered the last re-key under: until that exchange's DONE
    #: the device holds it or ``rekeyed_secret`` (PROTOCOL.md 2.3), so a retry tries both
    rekey_previous: bytes | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> OwnerBundle:
        try:
            raw = json.loads(path.read_text("utf-8"))
        except ValueError:  # not JSON (or not UTF-8): nothing of it is quoted
            raise ValueError(f"{path.name} is not a device owner bundle (not JSON)") from None
        return cls.parse(raw, name=path.name)

    @classmethod
    def parse(cls, raw: Any, *, name: str = "owner bundle") -> OwnerBundle:
        """A bundle already read as JSON; ValueError naming `name` and the field, never a value."""
        try:
            bundle = cls(
                device_id=parse_device_id(str(raw["device_id"])),
                model=str(raw["model"]),
                serial=str(raw["serial"]),
                mac=bytes.fromhex(str(raw["mac"]).replace(":", "").replace("-", "")),
                firmware_hash=bytes.fromhex(str(raw["firmware_hash"]).removeprefix("0x")),
                secret=bytes.fromhex(str(raw["secret"])),
                salt=bytes.fromhex(str(raw["salt"])),
                claim_code=str(raw["claim_code"]).encode(),
                rekeyed_secret=(
                    bytes.fromhex(str(raw["rekeyed_secret"])) if raw.get("rekeyed_secret") else None
                ),
                rekey_previous=(
                    bytes.fromhex(str(raw["rekey_previous"])) if raw.get("rekey_previous") else None
                ),
            )
        except (KeyError, ValueError, TypeError) as exc:
            # the message names the field, never its value (the bundle holds secrets)
            what = f"missing field {exc}" if isinstance(exc, KeyError) else "a field is malformed"
            raise ValueError(f"{name} is not a device owner bundle ({what})") from None
        if bundle.device().device_id != bundle.device_id:
            raise ValueError(f"{name}: the secret does not derive device 0x{bundle.device_id.hex()}")
        return bundle

    def device(self) -> ProvisionedDevice:
        return ProvisionedDevice(
            secret=self.secret,
            model=self.model,
            serial=self.serial,
            mac=self.mac,
            firmware_hash=self.firmware_hash,
            salt=self.salt,
            claim_code=self.claim_code,
            rekeyed_secret=self.rekeyed_secret,
        )

    def rekey_candidates(self) -> tuple[bytes, ...]:
        """The secrets the device may hold, in the order a re-key retry tries them: S' (once kept), the
        one it answered the interrupted exchange under, then the first S."""
        held = (self.rekeyed_secret, self.rekey_previous, self.secret)
        return tuple(dict.fromkeys(s for s in held if s is not None))

    @staticmethod
    def record_rekey(path: Path, new_secret: bytes, held: bytes | None = None) -> None:
        """Write S' into the bundle at ``path`` (0600, atomically): keys are sealed from it from now on.
        ``held``: the secret the device answered this exchange under (it holds that or S' until DONE)."""
        from device_agent.agent.keystore import write_private

        raw = json.loads(path.read_text("utf-8"))
        raw["rekeyed_secret"] = new_secret.hex()
        if held is not None and held.hex() != raw.get("secret"):
            raw["rekey_previous"] = held.hex()
        else:
            raw.pop("rekey_previous", None)
        write_private(path, (json.dumps(raw, indent=2) + "\n").encode())


# ---- reads ----
#: The chain's own events about one gateway (``Anchored`` shares its indexed id but is the audit's).
_GATEWAY_EVENTS = ("GatewayRegistered", "GatewayKeyRotated", "GatewayAccountChanged", "GatewayRemoved")


@dataclass(frozen=True, kw_only=True)
class GatewayRemoval:
    """A gateway's ``removeGateway`` as the chain recorded it: its block, that block's time, the
    transaction and the account that sent it (the gateway's operator or a channel admin)."""

    block: int
    time: int  # block timestamp, seconds since the epoch
    tx: str
    by: str
    by_role: str  # "its operator" or "a channel admin": the only accounts removeGateway accepts


def removal_consequences(name: str) -> list[str]:
    """What a removal means, as the contracts and the gateways' identity indexes make it (LEDGER.md)."""
    return [
        "no grant sealed to it counts any more on chain, and a gateway still running as "
        f"{name} drops every device it served (its identity index follows GatewayRemoved)",
        "its account was zeroed: it can no longer anchor audit roots or raise clone alerts",
        "nobody can authorize a device for it, rotate its key, change its account or name it to carry a "
        "re-key",
        f"the name {name} can never be registered again on this channel: register a replacement under a "
        "new name",
        "the removal moved no device's epoch: whoever holds its X25519 key can still open this epoch's "
        "sealed K_dg and broker password of each device it served, until that device's owner runs "
        f"`diams-ledger deauthorize-gateway <device> {name}` (the epoch moves), then `diams-ledger reseal` "
        "for the device's other gateways",
    ]


@dataclass(frozen=True, kw_only=True)
class GatewayInfo:
    """A gateway's record on chain, removed ones included (``removed``; ``removal`` says when and by whom
    when the channel's log of it is readable), and its own events (registration, key, account, removal)."""

    name: str
    gateway_id: bytes
    x25519_public_key: bytes
    account: str
    operator: str
    generation: int = 0
    removed: bool = False
    removal: GatewayRemoval | None = None
    history: list[TimelineEntry] = field(default_factory=list)

    @property
    def consequences(self) -> list[str]:
        return removal_consequences(self.name) if self.removed else []

    def removal_text(self) -> str:
        """``removed in block N (time UTC) by 0x.., tx 0x..``."""
        r = self.removal
        if r is None:
            return "removed (its GatewayRemoved event is not in this channel's log)"
        return f"removed in block {r.block} ({utc(r.time)}) by {r.by} ({r.by_role}), tx {r.tx}"

    def text(self) -> str:
        lines = [f"gateway     {self.name}", f"id          0x{self.gateway_id.hex()}"]
        if self.removed:
            lines.append(f"status      {self.removal_text()}")
            key = f"0x{self.x25519_public_key.hex()} (its last key, generation {self.generation})"
            lines.append(f"x25519      {key}")
            lines.append("account     none (zeroed by the removal)")
        else:
            lines.append("status      registered")
            lines.append(f"x25519      0x{self.x25519_public_key.hex()}")
            lines.append(f"account     {self.account}")
        lines.append(f"operator    {self.operator}")
        if self.removed:
            lines.append("removed means:")
            lines += [f"  - {c}" for c in self.consequences]
        if self.history:
            lines.append("history:")
            for t in self.history:
                details = ", ".join(f"{k}={v}" for k, v in t.details.items() if k != "gatewayId")
                lines.append(f"  block {t.block:>6}  {utc(t.time)}  {t.event:<22} {details}  tx {t.tx}")
        return "\n".join(lines)


def utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


async def gateway_info(ledger: Ledger, name: str, *, history: bool = True) -> GatewayInfo:
    """A gateway by name, registered or removed (``removed``: when, by whom, what it means); LedgerError
    for a name never registered on this channel. Callers that seal to it use `live_gateway`."""
    info = await find_gateway(ledger, name, history=history)
    if info is None:
        raise LedgerError(f"gateway {name} was never registered on this channel")
    return info


async def find_gateway(ledger: Ledger, name: str, *, history: bool = True) -> GatewayInfo | None:
    """`gateway_info`, or None for a name never registered on this channel. ``history=False``: the
    record alone (one view call) for a live gateway; a removed one always comes with its removal."""
    gid = name_id(name, what="gateway")
    try:
        record = await ledger.gateway(gid)
    except LedgerRevert as exc:
        if exc.error != "UnknownGateway":
            raise
        return None
    if not history and not record.removed:
        return GatewayInfo(
            name=id_text(gid), gateway_id=gid, x25519_public_key=record.x25519_public_key,
            account=record.account, operator=record.operator, generation=record.generation,
        )  # fmt: skip
    events = [
        e
        for e in await ledger.events(device_topic="0x" + gid.hex())
        if e.name in _GATEWAY_EVENTS and e.args.get("gatewayId") == gid
    ]
    times = {n: await ledger.block_timestamp(n) for n in dict.fromkeys(e.block_number for e in events)}
    removal = None
    for e in events:
        if e.name == "GatewayRemoved":
            by = await ledger.transaction_sender(e.transaction_hash)
            role = "its operator" if by.lower() == record.operator.lower() else "a channel admin"
            removal = GatewayRemoval(
                block=e.block_number, time=times[e.block_number], tx=e.transaction_hash, by=by, by_role=role
            )
    return GatewayInfo(
        name=id_text(gid),
        gateway_id=gid,
        x25519_public_key=record.x25519_public_key,
        account=record.account,
        operator=record.operator,
        generation=record.generation,
        removed=record.removed,
        removal=removal,
        history=[_timeline_entry(e, times[e.block_number], {}) for e in events],
    )


async def register_gateway(
    ledger: Ledger, operator: ActorHandle, name: str, *, x25519_public_key: bytes, account: str
) -> TxOutcome:
    """Register gateway ``name``; a removed gateway's name is refused in words (the chain keeps removed
    records so that no id is ever reused, and would only say GatewayExists, "already registered")."""
    known = await find_gateway(ledger, name, history=False)
    if known is not None and known.removed:
        raise LedgerError(
            f"gateway {known.name} was {known.removal_text()}: a removed gateway's name can never be "
            "registered again on this channel; register the replacement under a new name"
        )
    return await operator.register_gateway(
        name_id(name, what="gateway"), x25519_public_key=x25519_public_key, account=account
    )


async def live_gateway(ledger: Ledger, name: str) -> GatewayInfo:
    """A gateway that may still be sealed to (authorize, onboard, re-seal): LedgerError, in words, for one
    never registered or removed (the chain would refuse it with UnknownGateway)."""
    info = await gateway_info(ledger, name, history=False)
    if info.removed:
        raise LedgerError(
            f"gateway {info.name} was {info.removal_text()}: no device can be authorized for it any more "
            f"(`diams-ledger show gateway {info.name}` says what the removal means)"
        )
    return info


async def policy_info(ledger: Ledger, name: str, *, author: str | None = None) -> PolicyRecord:
    """A policy by its author's name for it (policies live in their author's namespace: the on-chain id
    is ``policy_key(author, name)``), or by its full on-chain id (0x + 64 hex). Without ``author`` the
    name must be defined by exactly one author on this channel."""
    from .model import policy_key

    if name.startswith("0x") and len(name) == 66:
        pid = parse_bytes32(name, name="policy")
    elif author is not None:
        pid = policy_key(author, name_id(name, what="policy"))
    else:
        local = name_id(name, what="policy")
        keys = {
            bytes(e.args["policyId"])  # type: ignore[call-overload]
            for e in await ledger.events()
            if e.name == "PolicyDefined"
            and policy_key(str(e.args["author"]), local) == bytes(e.args["policyId"])  # type: ignore[call-overload]
        }
        if len(keys) > 1:
            raise LedgerError(f"several owners define a policy named {name}: give its 0x id")
        if not keys:
            raise LedgerError(f"policy {name} is not defined on this channel")
        pid = keys.pop()
    try:
        record = await ledger.policy(pid)
    except LedgerRevert as exc:
        if exc.error != "UnknownPolicy":
            raise
        raise LedgerError(f"policy {name} is not defined on this channel") from None
    if record.author == ZERO_ADDRESS:
        raise LedgerError(f"policy {name} is not defined on this channel")
    return record


@dataclass(frozen=True, kw_only=True)
class TimelineEntry:
    event: str
    block: int
    time: int  # block timestamp, seconds since the epoch
    tx: str
    details: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RekeyPending:
    """A re-key due since ``acceptTransfer`` and not yet recorded by ``confirmRekey`` (docs/PROTOCOL.md
    2.3), as the chain says: ``carrier`` is the gateway the owner named at the device's current epoch
    (the latest ``startRekey``; that gateway gives the device its re-key login), None before it named one."""

    carrier: bytes | None

    @property
    def carrier_name(self) -> str | None:
        return None if self.carrier is None else id_text(self.carrier)

    def text(self) -> str:
        if self.carrier is None:
            return "pending, no gateway named to carry it yet (`diams-ledger rekey --gateway G`)"
        return f"pending, carried by {self.carrier_name}"


@dataclass(frozen=True, kw_only=True)
class DeviceDetail:
    record: DeviceRecord
    grants: list[GrantRecord]
    timeline: list[TimelineEntry]
    clone_alerts: int
    policy_label: str = ""  # the policy's name (from PolicyDefined), else its 0x id; "" without a policy
    rekey: RekeyPending | None = None  # None: no re-key due
    removed_gateways: frozenset[bytes] = frozenset()  # gateways of ``grants`` removed since (removeGateway)

    def grant_text(self, grant: GrantRecord) -> str:
        """One grant's status: current, stale or withdrawn, or its gateway removed (it never counts again)."""
        if grant.gateway_id in self.removed_gateways:
            name = id_text(grant.gateway_id)
            return f"gateway removed, it no longer counts (`diams-ledger show gateway {name}`)"
        return "current" if grant.current else "stale or withdrawn"

    @property
    def policy_name(self) -> str:
        if self.record.policy_id == bytes(32):
            return ""
        return self.policy_label or id_text(self.record.policy_id)


def policy_label(name: bytes | str | None, policy_id: bytes | None) -> str | None:
    """How a policy is shown: the name its author gave it, else its on-chain id; None for no policy."""
    if policy_id is None or policy_id == bytes(32):
        return None
    if isinstance(name, bytes):
        name = id_text(name) if name.rstrip(b"\0") else None
        if name is not None and name.startswith("0x"):
            name = None
    return name or "0x" + policy_id.hex()


async def device_detail(ledger: Ledger, device_id: bytes) -> DeviceDetail:
    """A device, the gateways it authorized, and its lifecycle from chain events with block times."""
    record = await ledger.device(device_id)
    if record.state is DeviceState.UNREGISTERED:
        raise LedgerError(f"device 0x{device_id.hex()} is not registered on this channel")
    history = await ledger.history(device_id)
    gateway_ids = dict.fromkeys(
        bytes(gw)
        for e in history
        if e.name == "GatewayAuthorized" and isinstance(gw := e.args["gatewayId"], bytes)
    )
    grants = [await ledger.grant(device_id, gw) for gw in gateway_ids]
    removed = frozenset([gw for gw in gateway_ids if (await ledger.gateway(gw)).removed])
    times: dict[int, int] = {}
    for e in history:
        if e.block_number not in times:
            times[e.block_number] = await ledger.block_timestamp(e.block_number)
    labels: dict[bytes, str] = {}  # policy id -> its name, for the current policy and the history's
    for pid in {record.policy_id, *(e.args.get("policyId") for e in history if e.name == "PolicySet")}:
        if isinstance(pid, bytes) and pid != bytes(32):
            labels[pid] = policy_label(await ledger.policy_name(pid), pid) or ""
    timeline = [_timeline_entry(e, times[e.block_number], labels) for e in history]
    alerts = sum(1 for e in history if e.name == "CloneAlert")
    label = labels.get(record.policy_id, "")
    return DeviceDetail(
        record=record,
        grants=grants,
        timeline=timeline,
        clone_alerts=alerts,
        policy_label=label,
        rekey=await rekey_pending(ledger, device_id, record.epoch, history),
        removed_gateways=removed,
    )


async def rekey_pending(
    ledger: Ledger, device_id: bytes, epoch: int, history: Sequence[LedgerEvent]
) -> RekeyPending | None:
    """The device's pending re-key from the chain (``deviceKey``'s flag), with the gateway named for
    ``epoch`` in its ``history`` (oldest first: the latest naming counts), or None when none is due."""
    _, pending = await ledger.device_key(device_id)
    if not pending:
        return None
    named = [
        bytes(gw)
        for e in history
        if e.name == "RekeyStarted"
        and e.args.get("epoch") == epoch
        and isinstance(gw := e.args["gatewayId"], bytes)
    ]
    return RekeyPending(carrier=named[-1] if named else None)


def _timeline_entry(e: LedgerEvent, when: int, policies: Mapping[bytes, str]) -> TimelineEntry:
    details: dict[str, Any] = {}
    for k, v in e.args.items():
        if k == "id":
            continue
        if k == "sealedKey":
            details[k] = f"{len(v)} bytes" if isinstance(v, bytes) else v
        elif k == "policyId" and isinstance(v, bytes) and v in policies:
            details[k] = policies[v]
        elif k in ("gatewayId", "policyId", "model") and isinstance(v, bytes):
            details[k] = id_text(v)
        else:
            details[k] = jsonable(v)
    return TimelineEntry(
        event=e.name, block=e.block_number, time=when, tx=e.transaction_hash, details=details
    )


def authentications(audit_logs: Iterable[Path], device_id: bytes, *, limit: int = 50) -> list[dict[str, Any]]:
    """A device's records in gateways' audit logs (authenticated, rejected, clone alerts, cut-offs),
    newest first. The audit log is the gateway's evidence; the chain holds only its Merkle roots."""
    want = device_id.hex()
    found: list[dict[str, Any]] = []
    for path in audit_logs:
        if not path.exists():
            continue
        found.extend(
            {"log": path.name, **{k: v for k, v in r.items() if k != "prev"}}
            for r in records(path)
            if r.get("device") == want
        )
    found.sort(key=lambda r: (float(r.get("ts", 0)), int(r.get("seq", 0))), reverse=True)
    return found[:limit]


# ---- writes ----
async def define_policy(
    owner: ActorHandle, name: str, *, publish: Sequence[str], subscribe: Sequence[str]
) -> TxOutcome:
    return await owner.define_policy(name_id(name, what="policy"), publish=publish, subscribe=subscribe)


async def authorize_from_bundle(
    ledger: Ledger, owner: ActorHandle, bundle: OwnerBundle, gateway: str
) -> TxOutcome:
    """Seal the device's keys for the gateway's registered X25519 key at the device's current epoch and
    firmware (both read from the chain), and publish them with the key commitment."""
    info = await live_gateway(ledger, gateway)
    record = await ledger.device(bundle.device_id)
    if record.state is DeviceState.UNREGISTERED:
        raise LedgerError(f"device 0x{bundle.device_id.hex()} is not registered on this channel")
    protocol_id = info.gateway_id.rstrip(b"\0")  # the id the device and the gateway speak
    device = bundle.device()
    keys = _keys_for(device, protocol_id, record)
    box = seal(keys, info.x25519_public_key, bundle.device_id, protocol_id, record.epoch)
    return await owner.authorize_gateway(
        bundle.device_id, info.gateway_id, sealed_key=box, key_commitment=identity.key_commitment(keys.k_dg)
    )


def _keys_for(device: ProvisionedDevice, protocol_id: bytes, record: DeviceRecord) -> Any:
    from dataclasses import replace

    current = replace(device, firmware_hash=record.firmware_hash)  # after recordFirmware, the chain's
    return current.gateway_keys(protocol_id, record.epoch)


async def recover_after_clone(ledger: Ledger, owner: ActorHandle, device_id: bytes) -> list[TxOutcome]:
    """A genuine device quarantined after a clone alert: suspend then activate (each gateway lifts its
    local quarantine when it sees the owner act on the ledger). From Suspended, activate alone."""
    state, _ = await ledger.device_state(device_id)
    outcomes = []
    if state is DeviceState.ACTIVE:
        outcomes.append(await owner.suspend(device_id))
    elif state is not DeviceState.SUSPENDED:
        raise LedgerError(
            f"device 0x{device_id.hex()} is {state.label}: only an Active or Suspended device recovers"
        )
    outcomes.append(await owner.activate(device_id))
    return outcomes


# ---- one table of lifecycle actions (CLI subcommands, console buttons, REST endpoints) ----
@dataclass(frozen=True, kw_only=True)
class Action:
    name: str  # CLI command and REST path segment
    method: str  # ActorHandle method
    params: tuple[str, ...]  # beyond the device id
    help: str
    who: str  # which actor may, as the contracts enforce it
    danger: bool = False  # the console asks for a confirmation


ACTIONS: tuple[Action, ...] = (
    Action(
        name="claim",
        method="claim",
        params=("claim_code",),
        who="owner",
        help="prove possession with the claim code; you become the owner",
    ),
    Action(name="activate", method="activate", params=(), who="owner", help="Claimed or Suspended -> Active"),
    Action(
        name="suspend",
        method="suspend",
        params=(),
        who="owner",
        danger=True,
        help="Active -> Suspended (owner or admin)",
    ),
    Action(
        name="transfer",
        method="transfer",
        params=("new_owner",),
        who="owner",
        danger=True,
        help="offer the device to a new owner (epoch + 1)",
    ),
    Action(
        name="accept-transfer",
        method="accept_transfer",
        params=(),
        who="owner",
        help="new owner: accept a transfer",
    ),
    Action(
        name="cancel-transfer",
        method="cancel_transfer",
        params=(),
        who="owner",
        help="withdraw a transfer offer",
    ),
    Action(
        name="revoke",
        method="revoke",
        params=(),
        who="owner",
        danger=True,
        help="revoke for good (owner or admin); every gateway cuts it off",
    ),
    Action(
        name="decommission",
        method="decommission",
        params=(),
        who="owner",
        danger=True,
        help="retire for good",
    ),
    Action(
        name="approve-maintainer",
        method="approve_maintainer",
        params=("maintainer",),
        who="owner",
        help="let a maintainer record firmware",
    ),
    Action(
        name="record-firmware",
        method="record_firmware",
        params=("firmware_hash",),
        who="maintainer",
        help="a new firmware hash, 0x + 64 hex (epoch + 1)",
    ),
    Action(
        name="deauthorize-gateway",
        method="deauthorize_gateway",
        params=("gateway",),
        who="owner",
        danger=True,
        help="withdraw a gateway (epoch + 1: re-authorize the others)",
    ),
    Action(
        name="set-policy",
        method="set_policy",
        params=("policy",),
        who="owner",
        help="attach an access policy by name",
    ),
)
ACTIONS_BY_NAME: Mapping[str, Action] = {a.name: a for a in ACTIONS}

PARAM_HELP: Mapping[str, str] = {
    "claim_code": "the claim code handed over with the device",
    "new_owner": "the new owner's account, 0x + 40 hex",
    "maintainer": "the maintainer's account, 0x + 40 hex",
    "firmware_hash": "SHA-256 of the firmware image, 0x + 64 hex",
    "gateway": "the gateway's name (e.g. gw-1) or 0x + 64 hex",
    "policy": "the policy's name (as given to define-policy) or 0x + 64 hex",
}


def _param(name: str, value: str) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required")
    if name == "firmware_hash":
        return parse_bytes32(value, name=name)
    if name in ("gateway", "policy"):
        return name_id(value, what=name)
    if name == "claim_code":
        return value.encode()
    if name in ("new_owner", "maintainer"):
        from eth_utils.address import is_address

        if not is_address(value.strip()):
            raise ValueError(f"{name} must be an account address, 0x + 40 hex")
        return value.strip()
    return value


async def run_action(
    actor: ActorHandle, action: str, device_id: bytes, params: Mapping[str, str]
) -> TxOutcome:
    """Run one lifecycle action from the table; parameters as text (from a command line or a form)."""
    spec = ACTIONS_BY_NAME.get(action)
    if spec is None:
        raise ValueError(f"unknown action {action!r}")
    values = [_param(p, params.get(p, "")) for p in spec.params]
    result: TxOutcome = await getattr(actor, spec.method)(device_id, *values)
    return result


# ---- onboarding a batch: claim, policy, activate, authorize ----
@dataclass(frozen=True, kw_only=True)
class RowError:
    line: int
    device_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class OnboardRow:
    line: int
    device_id: bytes
    claim_code: bytes = field(repr=False)
    bundle: OwnerBundle | None = None


@dataclass(kw_only=True)
class OnboardReport:
    onboarded: list[str] = field(default_factory=list)
    authorized: int = 0
    transactions: int = 0
    errors: list[RowError] = field(default_factory=list)


def read_onboard_csv(
    source: Path | str, *, bundle_dir: Path | None = None
) -> tuple[list[OnboardRow], list[RowError]]:
    """Rows of `device_id` plus `claim_code`, or `bundle` (a path to `<id>.owner.json`, relative to
    `bundle_dir`), or neither when `bundle_dir` holds `<device_id>.owner.json`. `source` is a file or
    the CSV text itself (the console's upload)."""
    text = source.read_text("utf-8") if isinstance(source, Path) else source
    base = bundle_dir if bundle_dir is not None else (source.parent if isinstance(source, Path) else None)
    reader = csv.DictReader(text.splitlines())
    if "device_id" not in (reader.fieldnames or ()):
        raise ValueError("CSV header needs device_id, and claim_code or bundle (or a bundle directory)")
    good: list[OnboardRow] = []
    bad: list[RowError] = []
    seen: dict[bytes, int] = {}
    for row in reader:
        line = reader.line_num
        raw_id = (row.get("device_id") or "").strip()
        try:
            dev = parse_device_id(raw_id)
            if dev in seen:
                raise ValueError(f"duplicate of line {seen[dev]}")
            bundle = None
            name = (row.get("bundle") or "").strip()
            candidate = (
                (base / name) if name and base else (base / f"{dev.hex()}.owner.json" if base else None)
            )
            if name and base is None:
                raise ValueError("bundle paths need a bundle directory")
            if candidate is not None and candidate.exists():
                bundle = OwnerBundle.load(candidate)
                if bundle.device_id != dev:
                    raise ValueError(f"bundle {candidate.name} is for another device")
            elif name:
                raise ValueError(f"bundle {name} not found")
            code = (row.get("claim_code") or "").strip().encode() or (bundle.claim_code if bundle else b"")
            if not code:
                raise ValueError("claim_code or an owner bundle is required")
        except ValueError as exc:
            bad.append(RowError(line=line, device_id=raw_id, reason=str(exc)))
            continue
        seen[dev] = line
        good.append(OnboardRow(line=line, device_id=dev, claim_code=code, bundle=bundle))
    return good, bad


async def onboard_rows(
    ledger: Ledger,
    owner: ActorHandle,
    rows: Sequence[OnboardRow],
    *,
    policy: str,
    gateways: Sequence[str] = (),
    batch_size: int = 100,
    progress: Callable[[str, int, int], None] | None = None,
) -> OnboardReport:
    """Claim, set `policy` on and activate every row's device (batches of `onboardMany`), then authorize
    each of `gateways` from the rows' owner bundles. Each row is checked against the chain first (state
    Manufactured, claim code matching), so a bad row is reported by line and the others still land."""
    report = OnboardReport()
    pid = name_id(policy, what="policy")
    await policy_info(ledger, policy, author=owner.address)  # refuse an undefined policy before any tx
    infos = [await live_gateway(ledger, g) for g in gateways]
    ready: list[OnboardRow] = []
    for i, row in enumerate(rows, 1):
        try:
            record = await ledger.device(row.device_id)
            if record.state is not DeviceState.MANUFACTURED:
                raise ValueError(
                    "not registered"
                    if record.state is DeviceState.UNREGISTERED
                    else f"is {record.state.label}, not Manufactured"
                )
            if identity.claim_hash(row.device_id, row.claim_code) != record.claim_hash:
                raise ValueError("the claim code does not match the registered claim hash")
            if infos and row.bundle is None:
                raise ValueError("authorizing a gateway needs the device's owner bundle")
        except ValueError as exc:
            report.errors.append(RowError(line=row.line, device_id=row.device_id.hex(), reason=str(exc)))
        else:
            ready.append(row)
        if progress:
            progress("checked", i, len(rows))
    done = 0
    for start in range(0, len(ready), batch_size):
        chunk = ready[start : start + batch_size]
        try:
            await owner.onboard_many([r.device_id for r in chunk], [r.claim_code for r in chunk], pid)
        except LedgerRevert as exc:
            report.errors.extend(
                RowError(line=r.line, device_id=r.device_id.hex(), reason=str(exc)) for r in chunk
            )
            continue
        report.transactions += 1
        report.onboarded.extend(r.device_id.hex() for r in chunk)
        done += len(chunk)
        if progress:
            progress("activated", done, len(ready))
    landed = [r for r in ready if r.device_id.hex() in set(report.onboarded)]
    for info in infos:
        protocol_id = info.gateway_id.rstrip(b"\0")
        for start in range(0, len(landed), batch_size):
            chunk = landed[start : start + batch_size]
            boxes, commitments = [], []
            for r in chunk:
                assert r.bundle is not None
                record = await ledger.device(r.device_id)
                keys = _keys_for(r.bundle.device(), protocol_id, record)
                boxes.append(seal(keys, info.x25519_public_key, r.device_id, protocol_id, record.epoch))
                commitments.append(identity.key_commitment(keys.k_dg))
            outcomes = await owner.authorize_gateway_many(
                info.gateway_id,
                device_ids=[r.device_id for r in chunk],
                sealed_keys=boxes,
                key_commitments=commitments,
            )
            report.transactions += len(outcomes)
            report.authorized += len(chunk)
            if progress:
                progress(f"authorized {info.name}", min(start + len(chunk), len(landed)), len(landed))
    report.errors.sort(key=lambda e: e.line)
    return report


def policy_text(record: PolicyRecord, name: str | None = None) -> str:
    return (
        f"policy      {name or id_text(record.policy_id)}\n"
        f"id          0x{record.policy_id.hex()}\n"
        f"author      {record.author}\n"
        f"publish     {', '.join(record.publish_streams) or '(nothing)'}\n"
        f"subscribe   {', '.join(record.subscribe_streams) or '(nothing)'}"
    )


def list_devices(index: IdentityIndex, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
    """Search the local identity index (never the chain): see `IdentityIndex.search`."""
    return index.search(**filters)
