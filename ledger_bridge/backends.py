"""Ledger backends: each is just something that opens a synchronous `Web3` on some chain.

Strategy: the `Ledger` runs every chain call on one worker thread (py-evm is not thread-safe and the
sync providers block), so a backend only has to build a `Web3`. `fund` exists for development chains
(eth-tester, anvil) whose actors start with no ether; a permissioned chain with free gas needs none.
The durable embedded py-evm backend (ledger_bridge/embedded) plugs in by implementing `LedgerBackend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import Wei

from .errors import LedgerUnavailable


@runtime_checkable
class LedgerBackend(Protocol):
    """Opens a Web3 on a chain. Called on the ledger's worker thread; `close` likewise."""

    @property
    def name(self) -> str: ...

    def open(self) -> Web3: ...

    def close(self) -> None: ...

    def fund(self, w3: Web3, address: str, wei: int) -> None:
        """Give `address` ether on a development chain; raise LedgerUnavailable where impossible."""
        ...


class EthereumTesterBackend:
    """Stock eth-tester with py-evm, in memory: gone when the process ends. For tests and demos."""

    name = "eth-tester"

    def __init__(self) -> None:
        self._w3: Web3 | None = None

    def open(self) -> Web3:
        self._w3 = Web3(EthereumTesterProvider())
        return self._w3

    def close(self) -> None:
        self._w3 = None

    def fund(self, w3: Web3, address: str, wei: int) -> None:
        faucet = w3.eth.accounts[0]
        tx_hash = w3.eth.send_transaction({"from": faucet, "to": address, "value": Wei(wei)})
        w3.eth.wait_for_transaction_receipt(tx_hash)


@dataclass(frozen=True, kw_only=True)
class RpcBackend:
    """JSON-RPC over HTTP(S) to any EVM node (anvil, geth, Besu, Quorum)."""

    url: str
    timeout_s: float = 10.0
    name: str = "rpc"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("RpcBackend needs an http:// or https:// URL")

    def open(self) -> Web3:
        # No automatic retries: web3 would resend eth_sendRawTransaction after a timeout, and a loaded
        # node that took the first copy answers the second "nonce too low". The ledger learns a
        # transaction's fate from its hash instead (Ledger._send).
        w3 = Web3(
            Web3.HTTPProvider(
                self.url, request_kwargs={"timeout": self.timeout_s}, exception_retry_configuration=None
            )
        )
        try:
            w3.eth.chain_id  # noqa: B018 - a first round trip, so a dead node fails here
        except Exception as exc:
            raise LedgerUnavailable(
                f"no EVM node answering at {_redact(self.url)} ({type(exc).__name__})"
            ) from exc
        return w3

    def close(self) -> None:
        return None

    def fund(self, w3: Web3, address: str, wei: int) -> None:
        for method in ("anvil_setBalance", "hardhat_setBalance"):
            response: Any = w3.provider.make_request(method, [address, hex(wei)])  # type: ignore[arg-type]
            if "error" not in response:
                return
        raise LedgerUnavailable("this node has no development faucet: fund the account by other means")


def _redact(url: str) -> str:
    """Drop credentials some node URLs carry (https://user:token@host)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
