"""A firmware update on the ledger: the maintainer records the new hash, the owner re-seals the keys.

Strategy: K_dg = f(S, D, G, epoch, firmware hash) (PROTOCOL.md section 3), and recording a firmware hash
(``record_firmware``, the maintainer's step) moves the device to epoch + 1. Every gateway's sealed key
is then stale: the gateways stop serving the device (and cut it off at the broker) until its owner
publishes new ones. ``reseal`` is the owner's one step after that: for each device it reads the epoch
and firmware hash now on the chain and the grant of every candidate gateway (``grantStatus``, a few
dozen devices per view call); a gateway whose grant
exists but is not current gets a new key, derived from the owner's bundle (the secret never leaves
this process) under the chain's epoch and firmware hash, sealed to that gateway's X25519 key and
published per gateway in batches (``authorizeGatewayMany``). Current grants are skipped, so running
it again after a partial failure finishes the job and does nothing more. The same step serves after a
gateway is deauthorized (that too moves the epoch).

Candidate gateways: the ones given, else every gateway named in the channel's ``GatewayAuthorized``
events (one log query: on a node with a long history, pass them explicitly). A removed gateway is never
sealed to (the chain refuses it): it is skipped and named in the report, so that the stale grant a removed
gateway keeps after the device's epoch moved does not stop the others' re-sealing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actor import ActorHandle
from .enrollment import GatewayPublicKey, ProvisionedDevice, sealed_grants
from .ledger import Ledger
from .model import DeviceState
from .operations import OwnerBundle

__all__ = ["ResealReport", "authorized_gateways", "device_from_owner_bundle", "reseal", "update_firmware"]


def device_from_owner_bundle(bundle: Mapping[str, Any]) -> ProvisionedDevice:
    """The owner's bundle (``<id>.owner.json`` from ``diams-agent provision``) as a ProvisionedDevice,
    with S' when the owner re-keyed the device (keys are then derived from it)."""
    return OwnerBundle.parse(bundle).device()


@dataclass(frozen=True, kw_only=True)
class ResealReport:
    devices: int  # devices looked at
    resealed: int  # (device, gateway) keys published
    current: int  # (device, gateway) grants already current: nothing to do
    transactions: int
    gateways: tuple[bytes, ...]  # on-chain ids of the gateways that got new keys
    not_live: tuple[bytes, ...] = ()  # devices skipped: suspended, revoked, decommissioned, ...
    removed: tuple[bytes, ...] = ()  # candidate gateways skipped: removed (removeGateway)
    epochs: Mapping[bytes, int] = dataclasses.field(default_factory=dict, repr=False)  # device -> epoch now

    def summary(self) -> str:
        names = ", ".join(g.rstrip(b"\0").decode("ascii", "replace") for g in self.gateways) or "none"
        text = (f"re-sealed {self.resealed} keys for {self.devices} devices in {self.transactions} "
                f"transactions (gateways: {names}); {self.current} already current")
        if self.not_live:
            text += f"; {len(self.not_live)} devices not active, skipped"
        if self.removed:
            removed = ", ".join(g.rstrip(b"\0").decode("ascii", "replace") for g in self.removed)
            text += f"; removed gateways, skipped: {removed}"
        return text


async def authorized_gateways(ledger: Ledger) -> list[bytes]:
    """On-chain ids of every gateway that ever received a sealed key on this channel, in first-seen order."""
    seen: dict[bytes, None] = {}
    for e in await ledger.events():
        if e.name == "GatewayAuthorized":
            gateway_id = e.args["gatewayId"]
            if isinstance(gateway_id, bytes):
                seen.setdefault(gateway_id, None)
    return list(seen)


async def reseal(
    ledger: Ledger,
    owner: ActorHandle,
    devices: Sequence[ProvisionedDevice],
    *,
    gateways: Sequence[bytes] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ResealReport:
    """Publish current keys for every (device, gateway) whose grant went stale.

    ``gateways``: on-chain ids of the candidates (default: ``authorized_gateways``)."""
    named = list(gateways) if gateways is not None else await authorized_gateways(ledger)
    records = {g: await ledger.gateway(g) for g in named}
    candidates = [g for g in named if not records[g].removed]
    todo: dict[bytes, list[ProvisionedDevice]] = {g: [] for g in candidates}
    epochs: dict[bytes, int] = {}
    current = 0
    not_live: list[bytes] = []
    step = 100
    for start in range(0, len(devices), step):
        chunk = devices[start : start + step]
        statuses = await ledger.grant_status([d.device_id for d in chunk], candidates)
        for d, status in zip(chunk, statuses, strict=True):
            if status.state is not DeviceState.ACTIVE:
                not_live.append(d.device_id)
                continue
            on_chain = dataclasses.replace(d, firmware_hash=status.firmware_hash)
            epochs[d.device_id] = status.epoch
            for g in candidates:
                if status.current[g]:
                    current += 1
                elif status.granted[g]:
                    todo[g].append(on_chain)
        if progress:
            progress("read", start + len(chunk))
    transactions = 0
    done: list[bytes] = []
    resealed = 0
    for g, devs in todo.items():
        if not devs:
            continue
        gw = records[g]
        pub = GatewayPublicKey(gateway_id=g.rstrip(b"\0"), x25519_public_key=gw.x25519_public_key)
        by_epoch: dict[int, list[ProvisionedDevice]] = {}
        for d in devs:
            by_epoch.setdefault(epochs[d.device_id], []).append(d)
        for epoch, group in by_epoch.items():
            boxes, commitments = sealed_grants(group, pub, epoch)
            outcomes = await owner.authorize_gateway_many(
                g, device_ids=[d.device_id for d in group], sealed_keys=boxes, key_commitments=commitments
            )
            transactions += len(outcomes)
            resealed += len(group)
        done.append(g)
        if progress:
            progress(f"re-sealed {pub.gateway_id.decode('ascii', 'replace')}", len(devs))
    return ResealReport(devices=len(devices), resealed=resealed, current=current, transactions=transactions,
                        gateways=tuple(done), not_live=tuple(not_live), epochs=epochs,
                        removed=tuple(g for g in named if records[g].removed))


async def update_firmware(
    ledger: Ledger,
    *,
    maintainer: ActorHandle,
    owner: ActorHandle,
    devices: Sequence[ProvisionedDevice],
    firmware_hash: bytes,
    gateways: Sequence[bytes] | None = None,
    approve: bool = True,
) -> tuple[list[tuple[ProvisionedDevice, int]], ResealReport]:
    """A whole update on the ledger: (the owner approves the maintainer,) the maintainer records
    ``firmware_hash`` for each device, the owner re-seals. -> ((device on the new image, its epoch), ...)."""
    if approve:
        for d in devices:
            if not await ledger.maintainer_approved(d.device_id, maintainer.address):
                await owner.approve_maintainer(d.device_id, maintainer.address)
    await maintainer.record_firmware_many([d.device_id for d in devices], firmware_hash)
    updated = [dataclasses.replace(d, firmware_hash=firmware_hash) for d in devices]
    report = await reseal(ledger, owner, updated, gateways=gateways)
    return [(d, report.epochs[d.device_id]) for d in updated if d.device_id in report.epochs], report
