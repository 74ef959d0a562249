"""What one actor (manufacturer, owner, maintainer, operator, gateway, admin) may ask of a channel.

Each method is one contract function, signed with the actor's own key; the chain decides whether the
actor may do it, and a refusal comes back as `LedgerRevert` in words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from .gas import BATCH_GAS, GAS_BUDGETS, MAX_BATCH, chunks
from .keystore import Signer
from .model import DeviceRegistration, Role, TxOutcome, check_device_id

if TYPE_CHECKING:
    from .ledger import Ledger


class ActorHandle:
    """Signs this channel's transactions as one actor. Get one from `Ledger.actor(signer)`."""

    def __init__(self, ledger: Ledger, signer: Signer) -> None:
        self._ledger = ledger
        self._signer = signer

    def __repr__(self) -> str:
        return f"ActorHandle({self._signer!r})"

    @property
    def address(self) -> str:
        return self._signer.address

    async def _tx(self, name: str, *args: object, gas: int | None = None, on_log: bool = False) -> TxOutcome:

        contract = self._ledger.auth_log if on_log else self._ledger.registry
        fn = contract.functions[name](*args)
        return await self._ledger.transact(self._signer, fn, gas=gas or GAS_BUDGETS[name])

    # ---- channel admin ----
    async def grant_role(self, role: Role, account: str) -> TxOutcome:
        return await self._tx("grantRole", role.role_id, to_checksum_address(account))

    async def revoke_role(self, role: Role, account: str) -> TxOutcome:
        return await self._tx("revokeRole", role.role_id, to_checksum_address(account))

    # ---- manufacturer ----
    async def register_device(self, registration: DeviceRegistration) -> TxOutcome:
        return await self._tx("registerDevice", _registration_tuple(registration))

    async def register_device_key(self, device_id: bytes, x25519_public_key: bytes) -> TxOutcome:
        """Manufacturer: the device's static X25519 public key (made on the device), before any claim."""
        return await self._tx("registerDeviceKey", check_device_id(device_id), _b32(x25519_public_key))

    async def register_device_key_many(
        self, device_ids: Sequence[bytes], x25519_public_keys: Sequence[bytes]
    ) -> list[TxOutcome]:
        """Manufacturer: many devices' keys, in as few transactions as fit (``registerDeviceKeyMany``). A
        refused batch raises `LedgerRevert` naming the device, and changes nothing; earlier batches stay."""

        if len(device_ids) != len(x25519_public_keys):
            raise ValueError("device_ids and device keys differ in length")
        return await self._batched(
            "registerDeviceKeyMany",
            device_ids,
            lambda ids, part: (ids, [_b32(k) for k in x25519_public_keys[part]]),
        )

    async def batch_limit(self, operation: str = "registerMany") -> int:
        """How many items one batch transaction of `operation` may carry on this chain (at most MAX_BATCH)."""

        base, per_item = BATCH_GAS[operation]
        return max(1, min(MAX_BATCH, (await self._ledger.block_gas_limit() * 9 // 10 - base) // per_item))

    async def register_many(
        self,
        registrations: Sequence[DeviceRegistration],
        *,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TxOutcome]:
        """Register devices in batches of `batch_size` (capped by `batch_limit`); one transaction per batch.

        A refused batch raises `LedgerRevert`, and changes nothing; the batches before it are on chain
        (call with one batch at a time, as csv_import does, to know exactly which rows landed)."""

        base, per_item = BATCH_GAS["registerMany"]
        size = max(1, min(batch_size or 10**9, await self.batch_limit()))
        outcomes: list[TxOutcome] = []
        done = 0
        for batch in chunks(registrations, size):
            outcomes.append(
                await self._tx(
                    "registerMany", [_registration_tuple(r) for r in batch], gas=base + per_item * len(batch)
                )
            )
            done += len(batch)
            if progress is not None:
                progress(done, len(registrations))
        return outcomes

    # ---- lifecycle (owner, claimant, admin) ----
    async def claim(self, device_id: bytes, claim_code: bytes) -> TxOutcome:
        return await self._tx("claim", check_device_id(device_id), claim_code)

    async def activate(self, device_id: bytes) -> TxOutcome:
        return await self._tx("activate", check_device_id(device_id))

    async def onboard_many(
        self, device_ids: Sequence[bytes], claim_codes: Sequence[bytes], policy_id: bytes
    ) -> TxOutcome:
        """Claim, set the policy of and activate a batch of devices in one transaction (all or nothing)."""

        if len(device_ids) != len(claim_codes):
            raise ValueError("one claim code per device")
        base, per_item = BATCH_GAS["onboardMany"]
        return await self._tx(
            "onboardMany",
            [check_device_id(d) for d in device_ids],
            list(claim_codes),
            _b32(policy_id),
            gas=base + per_item * len(device_ids),
        )

    async def confirm_rekey(self, device_id: bytes, key_commitment: bytes) -> TxOutcome:
        """Owner: the device was re-keyed (key confirmation passed); bumps the epoch."""
        return await self._tx("confirmRekey", check_device_id(device_id), _b32(key_commitment))

    async def start_rekey(self, device_id: bytes, gateway_id: bytes, sealed_password: bytes) -> TxOutcome:
        """Owner, while a re-key is pending: name the gateway that carries the exchange, with the device's
        broker password sealed to it (``sealing.seal_rekey_password``)."""
        return await self._tx(
            "startRekey", check_device_id(device_id), _b32(gateway_id), bytes(sealed_password)
        )

    async def suspend(self, device_id: bytes) -> TxOutcome:
        return await self._tx("suspend", check_device_id(device_id))

    async def transfer(self, device_id: bytes, new_owner: str) -> TxOutcome:
        return await self._tx("transfer", check_device_id(device_id), to_checksum_address(new_owner))

    async def accept_transfer(self, device_id: bytes) -> TxOutcome:
        return await self._tx("acceptTransfer", check_device_id(device_id))

    async def cancel_transfer(self, device_id: bytes) -> TxOutcome:
        return await self._tx("cancelTransfer", check_device_id(device_id))

    async def revoke(self, device_id: bytes) -> TxOutcome:
        return await self._tx("revoke", check_device_id(device_id))

    async def decommission(self, device_id: bytes) -> TxOutcome:
        return await self._tx("decommission", check_device_id(device_id))

    async def approve_maintainer(self, device_id: bytes, maintainer: str) -> TxOutcome:
        return await self._tx(
            "approveMaintainer", check_device_id(device_id), to_checksum_address(maintainer)
        )

    async def set_policy(self, device_id: bytes, policy_id: bytes) -> TxOutcome:
        """Give the device this owner's own policy named ``policy_id`` (the name it was defined under)."""
        return await self._tx("setPolicy", check_device_id(device_id), _b32(policy_id))

    async def use_shared_policy(self, device_id: bytes, policy_key: bytes) -> TxOutcome:
        """Give the device a policy by its full on-chain id (``model.policy_key``): own, or shared by its
        author."""
        return await self._tx("useSharedPolicy", check_device_id(device_id), _b32(policy_key))

    async def define_policy(
        self, policy_id: bytes, *, publish: Sequence[str], subscribe: Sequence[str]
    ) -> TxOutcome:
        """Define or change this actor's policy named ``policy_id``; its on-chain id is
        ``model.policy_key(self.address, policy_id)``: nobody else can define or change it."""
        return await self._tx("definePolicy", _b32(policy_id), _streams(publish), _streams(subscribe))

    async def share_policy(self, policy_id: bytes) -> TxOutcome:
        """Let other owners use this actor's policy named ``policy_id``; it is frozen from then on."""
        return await self._tx("sharePolicy", _b32(policy_id))

    # ---- gateways ----
    async def register_gateway(
        self, gateway_id: bytes, *, x25519_public_key: bytes, account: str
    ) -> TxOutcome:
        return await self._tx(
            "registerGateway", _b32(gateway_id), _b32(x25519_public_key), to_checksum_address(account)
        )

    async def rotate_gateway_key(self, gateway_id: bytes, *, x25519_public_key: bytes) -> TxOutcome:
        """Operator (or admin): a new sealing key; the gateway's grants stop counting until re-sealed
        under a bumped epoch."""
        return await self._tx("rotateGatewayKey", _b32(gateway_id), _b32(x25519_public_key))

    async def change_gateway_account(self, gateway_id: bytes, account: str) -> TxOutcome:
        """Operator (or admin): a new signing account for anchors and clone alerts."""
        return await self._tx("changeGatewayAccount", _b32(gateway_id), to_checksum_address(account))

    async def remove_gateway(self, gateway_id: bytes) -> TxOutcome:
        """Operator (or admin): retire the gateway for good (grants, account and id)."""
        return await self._tx("removeGateway", _b32(gateway_id))

    async def authorize_gateway(
        self, device_id: bytes, gateway_id: bytes, *, sealed_key: bytes, key_commitment: bytes
    ) -> TxOutcome:
        return await self._tx(
            "authorizeGateway", check_device_id(device_id), _b32(gateway_id), sealed_key, _b32(key_commitment)
        )

    async def authorize_gateway_many(
        self,
        gateway_id: bytes,
        *,
        device_ids: Sequence[bytes],
        sealed_keys: Sequence[bytes],
        key_commitments: Sequence[bytes],
    ) -> list[TxOutcome]:
        """Publish one gateway's sealed keys for many devices (a group), in as few transactions as fit."""

        if not len(device_ids) == len(sealed_keys) == len(key_commitments):
            raise ValueError("device_ids, sealed_keys and key_commitments differ in length")
        return await self._batched(
            "authorizeGatewayMany",
            device_ids,
            lambda ids, part: (
                ids,
                _b32(gateway_id),
                list(sealed_keys[part]),
                [_b32(c) for c in key_commitments[part]],
            ),
        )

    async def deauthorize_gateway(self, device_id: bytes, gateway_id: bytes) -> TxOutcome:
        return await self._tx("deauthorizeGateway", check_device_id(device_id), _b32(gateway_id))

    # ---- maintainer ----
    async def record_firmware(self, device_id: bytes, firmware_hash: bytes) -> TxOutcome:
        return await self._tx("recordFirmware", check_device_id(device_id), _b32(firmware_hash))

    async def record_firmware_many(
        self, device_ids: Sequence[bytes], firmware_hash: bytes | Sequence[bytes]
    ) -> list[TxOutcome]:
        """Record a new image for many devices (one hash for all, or one each), in as few transactions as
        fit. A refused batch raises `LedgerRevert` and changes nothing; the batches before it are on chain."""

        if isinstance(firmware_hash, bytes):
            hashes: list[bytes] = [firmware_hash] * len(device_ids)
        else:
            hashes = list(firmware_hash)
        if len(hashes) != len(device_ids):
            raise ValueError("device_ids and firmware hashes differ in length")
        return await self._batched(
            "recordFirmwareMany", device_ids, lambda ids, part: (ids, [_b32(h) for h in hashes[part]])
        )

    async def _batched(
        self,
        operation: str,
        device_ids: Sequence[bytes],
        arguments: Callable[[list[bytes], slice], tuple[Any, ...]],
    ) -> list[TxOutcome]:
        """One `operation` transaction per batch of devices, as many per batch as the block gas limit
        allows; `arguments(ids, part)` gives a batch's call arguments (`part` slices the other columns)."""
        base, per_item = BATCH_GAS[operation]
        size = await self.batch_limit(operation)
        outcomes = []
        for start in range(0, len(device_ids), size):
            part = slice(start, start + size)
            ids = [check_device_id(d) for d in device_ids[part]]
            outcomes.append(await self._tx(operation, *arguments(ids, part), gas=base + per_item * len(ids)))
        return outcomes

    # ---- gateway account (authentication log) ----
    async def anchor(
        self, gateway_id: bytes, *, merkle_root: bytes, count: int, first_seq: int, last_seq: int
    ) -> TxOutcome:
        return await self._tx(
            "anchor", _b32(gateway_id), _b32(merkle_root), count, first_seq, last_seq, on_log=True
        )

    async def clone_alert(self, device_id: bytes, gateway_id: bytes, *, counter: int) -> TxOutcome:
        return await self._tx(
            "cloneAlert", check_device_id(device_id), _b32(gateway_id), counter, on_log=True
        )


def _b32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError("expected 32 bytes")
    return value


def _streams(names: Sequence[str]) -> str:
    for name in names:
        if not name or any(c in name for c in ",/+#") or name != name.strip():
            raise ValueError(f"invalid stream name {name!r}")
    return ",".join(names)


def _registration_tuple(r: DeviceRegistration) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    return (r.device_id, r.model, r.firmware_hash, r.characteristics, r.claim_hash)
