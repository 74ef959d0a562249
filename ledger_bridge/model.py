"""Values exchanged with the ledger: lifecycle states, roles, and records read back from the contracts.

`TRANSITIONS` mirrors the contract's `_FROM_*` masks (contracts/DeviceRegistry.sol) in one table;
a conformance test drives every (state, operation) pair on chain and checks that both agree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from eth_utils.crypto import keccak

DEVICE_ID_LEN = 8
ZERO_ADDRESS = "0x" + "00" * 20


class DeviceState(enum.IntEnum):
    """DeviceRegistry.State, in the same order."""

    UNREGISTERED = 0
    MANUFACTURED = 1
    CLAIMED = 2
    ACTIVE = 3
    SUSPENDED = 4
    TRANSFERRED = 5
    REVOKED = 6
    DECOMMISSIONED = 7

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @property
    def is_final(self) -> bool:
        return self in (DeviceState.REVOKED, DeviceState.DECOMMISSIONED)


class Role(enum.Enum):
    """AccessControl roles of a channel; `role_id` is the on-chain bytes32."""

    ADMIN = "DEFAULT_ADMIN_ROLE"
    MANUFACTURER = "MANUFACTURER_ROLE"
    MAINTAINER = "MAINTAINER_ROLE"
    OPERATOR = "OPERATOR_ROLE"

    @property
    def role_id(self) -> bytes:
        return bytes(32) if self is Role.ADMIN else bytes(keccak(text=self.value))

    @classmethod
    def from_id(cls, role_id: bytes) -> Role | None:
        return next((r for r in cls if r.role_id == role_id), None)


_S = DeviceState
_LIVE = frozenset({_S.CLAIMED, _S.ACTIVE, _S.SUSPENDED})

#: operation (contract function) -> (states it may start from, state it leaves; None = unchanged)
TRANSITIONS: Mapping[str, tuple[frozenset[DeviceState], DeviceState | None]] = {
    "claim": (frozenset({_S.MANUFACTURED}), _S.CLAIMED),
    "activate": (frozenset({_S.CLAIMED, _S.SUSPENDED}), _S.ACTIVE),
    "suspend": (frozenset({_S.ACTIVE}), _S.SUSPENDED),
    "transfer": (_LIVE, _S.TRANSFERRED),
    "acceptTransfer": (frozenset({_S.TRANSFERRED}), _S.CLAIMED),
    "cancelTransfer": (frozenset({_S.TRANSFERRED}), _S.CLAIMED),
    "revoke": (frozenset({_S.MANUFACTURED, *_LIVE, _S.TRANSFERRED}), _S.REVOKED),
    "decommission": (_LIVE, _S.DECOMMISSIONED),
    "approveMaintainer": (_LIVE, None),
    "recordFirmware": (_LIVE, None),
    "authorizeGateway": (_LIVE, None),
    "deauthorizeGateway": (_LIVE, None),
    "setPolicy": (_LIVE, None),
}


@dataclass(frozen=True, kw_only=True)
class Channel:
    """One channel: a registry deployment and its authentication log."""

    registry: str
    auth_log: str
    deployed_block: int = 0


@dataclass(frozen=True, kw_only=True)
class DeviceRegistration:
    """What a manufacturer publishes for one device: hashes and commitments only, never raw identifiers."""

    device_id: bytes
    model: bytes
    firmware_hash: bytes
    characteristics: bytes
    claim_hash: bytes
    #: the device's static X25519 public key (made on the device at manufacture; PROTOCOL.md 2.3),
    #: registered with registerDeviceKey right after the device: what lets a new owner re-key it
    device_key: bytes | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        for name in ("model", "firmware_hash", "characteristics", "claim_hash"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"{name} must be 32 bytes")
        if self.device_key is not None and (len(self.device_key) != 32 or not any(self.device_key)):
            raise ValueError("device_key must be 32 bytes, not all zero")


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    device_id: bytes
    manufacturer: str
    state: DeviceState
    epoch: int
    owner: str
    pending_owner: str
    model: bytes
    firmware_hash: bytes
    characteristics: bytes
    claim_hash: bytes
    policy_id: bytes


@dataclass(frozen=True, kw_only=True)
class GatewayRecord:
    gateway_id: bytes
    x25519_public_key: bytes
    account: str
    operator: str
    generation: int = 0  # moves on every key rotation and on removal
    removed: bool = False


@dataclass(frozen=True, kw_only=True)
class GrantRecord:
    """A gateway's sealed verification key for one device; `current` only for the device's present epoch."""

    device_id: bytes
    gateway_id: bytes
    epoch: int
    key_commitment: bytes
    sealed_key: bytes
    current: bool
    generation: int = 0  # the gateway key generation it was sealed to


@dataclass(frozen=True, kw_only=True)
class GrantStatus:
    """One device's grants as an owner re-sealing a fleet reads them (``Ledger.grant_status``): per
    gateway asked, whether it holds a sealed key (`granted`) and whether that key is current."""

    device_id: bytes
    state: DeviceState
    epoch: int
    firmware_hash: bytes
    granted: Mapping[bytes, bool]
    current: Mapping[bytes, bool]


@dataclass(frozen=True, kw_only=True)
class PolicyRecord:
    """`policy_id` is the on-chain id, `policy_key(author, name)`; a shared policy is frozen."""

    policy_id: bytes
    author: str
    publish_streams: tuple[str, ...]
    subscribe_streams: tuple[str, ...]
    shared: bool = False


@dataclass(frozen=True, kw_only=True)
class AnchorRecord:
    merkle_root: bytes
    gateway_id: bytes
    count: int
    first_seq: int
    last_seq: int
    block_number: int
    timestamp: int
    transaction_hash: str = ""  # set when read from the Anchored event


@dataclass(frozen=True, kw_only=True)
class LedgerEvent:
    """One decoded contract event, for history displays and indexes."""

    name: str
    block_number: int
    transaction_hash: str
    log_index: int
    args: Mapping[str, object]


@dataclass(frozen=True, kw_only=True)
class TxOutcome:
    """A mined, successful transaction."""

    transaction_hash: str
    block_number: int
    gas_used: int


def policy_key(author: str, name: bytes) -> bytes:
    """The on-chain id of ``author``'s policy ``name`` (32 bytes): keccak256(abi.encode(author, name)),
    as the registry's ``policyKey`` computes it. Policies live in their author's namespace."""
    from eth_abi.abi import encode
    from eth_utils.address import to_checksum_address

    if len(name) != 32:
        raise ValueError("a policy name is 32 bytes")
    return bytes(keccak(encode(["address", "bytes32"], [to_checksum_address(author), name])))


def check_device_id(device_id: bytes) -> bytes:
    if len(device_id) != DEVICE_ID_LEN or device_id == bytes(DEVICE_ID_LEN):
        raise ValueError("device id must be 8 bytes, not all zero")
    return device_id


def split_streams(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())
