"""Putting devices on the ledger as their actors would: manufacture, registration, claim, activation,
policy, and authorization of gateways with sealed keys.

``ProvisionedDevice`` is what exists at manufacture: the embedded secret and the characteristics
(the secret never leaves this object's holder; reprs hide it). ``onboard`` runs the whole chain of
actor steps for a batch: the manufacturer registers, the owner claims, sets the policy, activates,
and seals each device's keys to each authorized gateway.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from device_agent.core import identity, keys

from .actor import ActorHandle
from .index import onchain_gateway_id
from .model import DeviceRegistration
from .sealing import GatewayKeys, seal


@dataclass(frozen=True, kw_only=True)
class ProvisionedDevice:
    secret: bytes = field(repr=False)
    model: str
    serial: str
    mac: bytes
    firmware_hash: bytes
    salt: bytes = field(repr=False)
    claim_code: bytes = field(repr=False)
    #: S' after a re-key at transfer (docs/PROTOCOL.md 2.3): the keys come from it from then on, while
    #: the device id stays the one ``secret`` derived at manufacture
    rekeyed_secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def generate(
        cls,
        *,
        model: str,
        serial: str,
        firmware_hash: bytes,
        mac: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> ProvisionedDevice:
        return cls(
            secret=random_bytes(32),
            model=model,
            serial=serial,
            mac=mac if mac is not None else bytes([0x02]) + random_bytes(5),
            firmware_hash=firmware_hash,
            salt=random_bytes(16),
            claim_code=random_bytes(12),
        )

    @property
    def device_id(self) -> bytes:
        return bytes(identity.derive_device_id(self.secret, self.model, self.serial, self.mac))

    def registration(self) -> DeviceRegistration:
        return DeviceRegistration(
            device_id=self.device_id,
            model=hashlib.sha256(self.model.encode()).digest(),
            firmware_hash=self.firmware_hash,
            characteristics=identity.characteristics_commitment(
                self.salt, self.model, self.serial, self.mac, self.firmware_hash
            ),
            claim_hash=identity.claim_hash(self.device_id, self.claim_code),
        )

    @property
    def current_secret(self) -> bytes:
        """The secret the device holds now: S' after a re-key, S before."""
        return self.secret if self.rekeyed_secret is None else self.rekeyed_secret

    def gateway_keys(self, gateway_id: bytes, epoch: int) -> GatewayKeys:
        did = self.device_id
        return GatewayKeys(
            k_dg=keys.gateway_key(self.current_secret, did, gateway_id, epoch, self.firmware_hash),
            broker_password=bytes.fromhex(keys.broker_password(self.current_secret, did, epoch)),
        )

    def broker_password(self, epoch: int) -> str:
        """P_e: the device's broker password at identity epoch ``epoch`` (PROTOCOL.md 3.4)."""
        return str(keys.broker_password(self.current_secret, self.device_id, epoch))


@dataclass(frozen=True, kw_only=True)
class GatewayPublicKey:
    gateway_id: bytes  # the protocol's id, e.g. b"gw-paris-1"
    x25519_public_key: bytes


def sealed_grants(
    devices: Sequence[ProvisionedDevice], gateway: GatewayPublicKey, epoch: int
) -> tuple[list[bytes], list[bytes]]:
    """-> (sealed boxes, key commitments) for each device, for one gateway at one epoch."""
    boxes, commitments = [], []
    for d in devices:
        k = d.gateway_keys(gateway.gateway_id, epoch)
        boxes.append(seal(k, gateway.x25519_public_key, d.device_id, gateway.gateway_id, epoch))
        commitments.append(identity.key_commitment(k.k_dg))
    return boxes, commitments


async def onboard(
    *,
    manufacturer: ActorHandle,
    owner: ActorHandle,
    devices: Sequence[ProvisionedDevice],
    gateways: Sequence[GatewayPublicKey],
    policy_id: bytes,
    batch: int = 100,
    progress: Callable[[str, int], None] | None = None,
) -> None:
    """Register, claim, set the policy, activate, and authorize ``gateways`` for every device.

    ``policy_id`` must already be defined by the owner. Each step is one actor's own transactions;
    registration and authorization go in batches of ``batch`` devices.
    """
    m, o = manufacturer, owner
    for i in range(0, len(devices), batch):
        chunk = devices[i : i + batch]
        await m.register_many([d.registration() for d in chunk])
        if progress:
            progress("registered", i + len(chunk))
    for i in range(0, len(devices), batch):
        chunk = devices[i:i + batch]
        await o.onboard_many([d.device_id for d in chunk], [d.claim_code for d in chunk], policy_id)
        if progress:
            progress("activated", i + len(chunk))
    for gw in gateways:
        for i in range(0, len(devices), batch):
            chunk = devices[i : i + batch]
            boxes, commitments = sealed_grants(chunk, gw, 0)
            await o.authorize_gateway_many(
                onchain_gateway_id(gw.gateway_id),
                device_ids=[d.device_id for d in chunk],
                sealed_keys=boxes,
                key_commitments=commitments,
            )
            if progress:
                progress(f"authorized {gw.gateway_id.decode()}", i + len(chunk))
