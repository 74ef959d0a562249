"""A hand-assembled contract for the embedded chain's tests (no compiler needed).

``Stored``: a call with a 32-byte word stores it in slot 0 and emits ``Stored(uint256 indexed)``
(topic1 and data both carry the word); a call with no data returns the stored word.
"""

from __future__ import annotations

from eth_account import Account
from eth_utils.crypto import keccak

STORED_TOPIC = keccak(text="Stored(uint256)")


def _runtime() -> bytes:
    setter = (
        bytes([0x60, 0x00, 0x35])  # PUSH1 0 CALLDATALOAD -> x
        + bytes([0x80, 0x60, 0x00, 0x55])  # DUP1 PUSH1 0 SSTORE -> sstore(0, x); x left
        + bytes([0x80, 0x60, 0x00, 0x52])  # DUP1 PUSH1 0 MSTORE -> mem[0:32] = x; x left
        + bytes([0x7F]) + STORED_TOPIC  # PUSH32 topic0
        + bytes([0x60, 0x20, 0x60, 0x00, 0xA2])  # PUSH1 32 PUSH1 0 LOG2(0, 32, topic0, x)
        + bytes([0x00])  # STOP
    )
    head_len = 5  # CALLDATASIZE ISZERO PUSH1 getter JUMPI
    getter_at = head_len + len(setter)
    head = bytes([0x36, 0x15, 0x60, getter_at, 0x57])
    getter = bytes([0x5B, 0x60, 0x00, 0x54, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xF3])
    return head + setter + getter


RUNTIME = _runtime()
# CODECOPY(0, 12, len) then RETURN(0, len): the 12-byte initcode returns the runtime after it.
_COPY = bytes([0x60, len(RUNTIME), 0x60, 12, 0x60, 0x00, 0x39])
INITCODE = _COPY + bytes([0x60, len(RUNTIME), 0x60, 0x00, 0xF3]) + RUNTIME

DEPLOY_GAS = 200_000
STORE_GAS = 60_000


def signed(account: Account, nonce: int, chain_id: int, *, to: str | None, data: bytes, gas: int) -> bytes:
    """A signed EIP-1559 transaction, raw bytes ready for ``eth_sendRawTransaction``."""
    tx: dict[str, object] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "gas": gas,
        "value": 0,
        "data": data,
    }
    if to is not None:
        tx["to"] = to
    return bytes(account.sign_transaction(tx).raw_transaction)


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")
