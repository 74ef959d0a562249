"""DIAMS ledger bridge: device identities and authentication evidence on an EVM chain.

`async with Ledger(backend=..., channel=...) as ledger:` reads a channel; `ledger.actor(signer)` writes
to it as one actor. Errors are the tree in `ledger_bridge.errors`.
"""

from .actor import ActorHandle
from .backends import EthereumTesterBackend, LedgerBackend, RpcBackend
from .errors import ArtifactError, ChannelError, KeystoreError, LedgerError, LedgerRevert, LedgerUnavailable
from .keystore import Signer, create_keystore, load_signer
from .ledger import Ledger
from .model import (
    TRANSITIONS,
    AnchorRecord,
    Channel,
    DeviceRecord,
    DeviceRegistration,
    DeviceState,
    GatewayRecord,
    GrantRecord,
    GrantStatus,
    LedgerEvent,
    PolicyRecord,
    Role,
    TxOutcome,
    policy_key,
)

__all__ = [
    "TRANSITIONS",
    "ActorHandle",
    "AnchorRecord",
    "ArtifactError",
    "Channel",
    "ChannelError",
    "DeviceRecord",
    "DeviceRegistration",
    "DeviceState",
    "EthereumTesterBackend",
    "GatewayRecord",
    "GrantRecord",
    "GrantStatus",
    "KeystoreError",
    "Ledger",
    "LedgerBackend",
    "LedgerError",
    "LedgerEvent",
    "LedgerRevert",
    "LedgerUnavailable",
    "PolicyRecord",
    "Role",
    "RpcBackend",
    "Signer",
    "TxOutcome",
    "create_keystore",
    "load_signer",
    "policy_key",
]
