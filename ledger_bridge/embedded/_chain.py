"""Opening, creating and closing the embedded chain, and the web3 providers over it."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from eth.db.atomic import AtomicDB
from eth.exceptions import PyEVMError
from eth_account import Account
from eth_tester.backends.pyevm.main import get_default_genesis_params
from eth_typing import Address
from eth_utils.address import to_canonical_address, to_checksum_address
from web3.providers.async_base import AsyncBaseProvider
from web3.providers.eth_tester import AsyncEthereumTesterProvider, EthereumTesterProvider
from web3.providers.eth_tester.defaults import API_ENDPOINTS
from web3.types import RPCEndpoint, RPCResponse

from ._backend import DurablePyEVMBackend, IndexedEthereumTester, chain_class
from ._errors import EmbeddedChainError
from ._store import SCHEMA_VERSION, ChainStore

DEFAULT_CHAIN_ID: Final = 1337
DEFAULT_BALANCE_WEI: Final = 10**24  # a million ether per funded account
DEFAULT_GAS_LIMIT: Final = 30_000_000


class EmbeddedChain:
    """A durable in-process EVM chain in one SQLite file; web3 reaches it through :attr:`provider`.

    Use :meth:`open`; close with :meth:`close` or a ``with`` block. The chain automines: each
    transaction is mined into its own block, committed to disk before its hash is returned.
    """

    def __init__(
        self, path: Path, tester: IndexedEthereumTester, chain_id: int, faucet_key: bytes | None
    ) -> None:
        self._path = path
        self._faucet = Account.from_key(faucet_key) if faucet_key is not None else None
        self._tester = tester
        self._backend: DurablePyEVMBackend = tester.backend
        self._chain_id = chain_id
        self._lock = threading.Lock()
        self._closed = False
        self._provider = _EmbeddedProvider(self)
        self._async_provider = _AsyncEmbeddedProvider(self)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        chain_id: int | None = None,
        funded: Iterable[str | bytes] = (),
        balance_wei: int = DEFAULT_BALANCE_WEI,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        faucet: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> EmbeddedChain:
        """Open the chain stored at ``path``, creating it (genesis) if the file has none.

        ``chain_id`` (default 1337 for a new chain), ``funded`` (addresses given ``balance_wei``
        at genesis) and ``gas_limit`` define the genesis and are stored with it; reopening with
        different values raises :class:`EmbeddedChainError`, leaving them out accepts what is
        stored. ``faucet=True`` on a new chain also funds a faucet account whose random key is
        kept in the file, so :meth:`fund` can give ether to actors created later (the chain is
        private to this process: its ether pays for gas only). ``clock`` gives block timestamps
        (seconds since the epoch).
        """
        path = Path(path)
        funded_addresses = sorted({to_canonical_address(a).hex() for a in funded})
        if chain_id is not None and chain_id <= 0:
            raise ValueError("chain_id must be positive")
        if balance_wei < 0 or gas_limit < 21_000:
            raise ValueError("balance_wei must be >= 0 and gas_limit >= 21000")
        store = ChainStore.open(path)
        try:
            meta = store.read_meta()
            if not meta:
                meta = _create_genesis(
                    store,
                    chain_id=DEFAULT_CHAIN_ID if chain_id is None else chain_id,
                    funded=funded_addresses,
                    balance_wei=balance_wei,
                    gas_limit=gas_limit,
                    faucet=faucet,
                    clock=clock,
                )
            elif funded_addresses and json.loads(meta.get("funded", "[]")) != funded_addresses:
                raise EmbeddedChainError(f"{path} was created with other funded accounts")
            elif faucet and "faucet_key" not in meta:
                raise EmbeddedChainError(f"{path} was created without a faucet")
            chain = _resume(store, meta, path, expected_chain_id=chain_id)
        except BaseException:
            store.close()
            raise
        backend = DurablePyEVMBackend(chain, store, clock=clock)
        faucet_key = bytes.fromhex(meta["faucet_key"]) if "faucet_key" in meta else None
        return cls(path, IndexedEthereumTester(backend=backend), int(meta["chain_id"]), faucet_key)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def head_number(self) -> int:
        """The number of the last committed block."""
        with self._lock:
            self._check_open()
            number: int = self._backend.chain.get_canonical_head().block_number
            return number

    @property
    def provider(self) -> EthereumTesterProvider:
        """A synchronous web3 provider (``Web3(chain.provider)``); thread-safe, calls are serialised."""
        return self._provider

    @property
    def async_provider(self) -> AsyncBaseProvider:
        """An asyncio web3 provider (``AsyncWeb3(chain.async_provider)``) running each call in a thread."""
        return self._async_provider

    def fund(self, address: str | bytes, wei: int) -> bytes:
        """Send ``wei`` from the faucet to ``address``; returns the (committed) transaction hash."""
        if self._faucet is None:
            raise EmbeddedChainError("this chain has no faucet (create it with faucet=True)")
        if wei <= 0:
            raise ValueError("wei must be positive")
        with self._lock:
            self._check_open()
            sender = self._faucet.address
            nonce = self._backend.get_nonce(to_canonical_address(sender))
            base_fee = self._backend.chain.get_block().header.base_fee_per_gas or 0
            transfer = {
                "type": 2,
                "chainId": self._chain_id,
                "nonce": nonce,
                "to": to_checksum_address(address),
                "value": wei,
                "gas": 21_000,
                "maxPriorityFeePerGas": 1,
                "maxFeePerGas": 2 * base_fee + 1,
            }
            raw = self._faucet.sign_transaction(transfer).raw_transaction
            tx_hash: str = self._tester.send_raw_transaction("0x" + bytes(raw).hex())
            return bytes.fromhex(tx_hash.removeprefix("0x"))

    def close(self) -> None:
        """Close the file; idempotent. Everything mined is already committed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._backend.store.close()

    def __enter__(self) -> EmbeddedChain:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedChain(path={str(self._path)!r}, chain_id={self._chain_id})"

    def _check_open(self) -> None:
        if self._closed:
            raise EmbeddedChainError("the embedded chain is closed")
        self._backend.check_usable()

    def _request(self, provider: EthereumTesterProvider, method: RPCEndpoint, params: Any) -> RPCResponse:
        """Run one JSON-RPC call against the chain (used by both providers)."""
        with self._lock:
            self._check_open()
            response: RPCResponse = EthereumTesterProvider.make_request(provider, method, params)
            return response


def _create_genesis(
    store: ChainStore,
    *,
    chain_id: int,
    funded: list[str],
    balance_wei: int,
    gas_limit: int,
    faucet: bool,
    clock: Callable[[], float],
) -> dict[str, str]:
    faucet_key = secrets.token_bytes(32) if faucet else None
    accounts = list(funded)
    if faucet_key is not None:
        accounts.append(to_canonical_address(Account.from_key(faucet_key).address).hex())
    params = get_default_genesis_params({"gas_limit": gas_limit, "timestamp": int(clock())})
    state: dict[Address, Any] = {
        Address(bytes.fromhex(address)): {"balance": balance_wei, "nonce": 0, "code": b"", "storage": {}}
        for address in accounts
    }
    try:
        chain = chain_class(chain_id).from_genesis(AtomicDB(store), params, state)
    except PyEVMError as exc:
        raise EmbeddedChainError(f"cannot create the genesis block: {exc!r}") from exc
    genesis = chain.get_canonical_head()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "chain_id": str(chain_id),
        "funded": json.dumps(funded),
        "balance_wei": str(balance_wei),
        "gas_limit": str(gas_limit),
        "genesis_hash": genesis.hash.hex(),
        "head_number": "0",
        "head_hash": genesis.hash.hex(),
    }
    if faucet_key is not None:
        meta["faucet_key"] = faucet_key.hex()
    store.commit_block(meta=meta)
    return meta


def _resume(store: ChainStore, meta: dict[str, str], path: Path, *, expected_chain_id: int | None) -> Any:
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise EmbeddedChainError(f"{path} has schema {meta.get('schema_version')!r}, not {SCHEMA_VERSION}")
    try:
        chain_id = int(meta["chain_id"])
        head_number, head_hash = int(meta["head_number"]), meta["head_hash"]
    except (KeyError, ValueError) as exc:
        raise EmbeddedChainError(f"{path} has incomplete metadata: {exc!r}") from exc
    if expected_chain_id is not None and expected_chain_id != chain_id:
        raise EmbeddedChainError(f"{path} holds chain id {chain_id}, not {expected_chain_id}")
    try:
        chain = chain_class(chain_id)(AtomicDB(store))
        head = chain.get_canonical_head()
    except (PyEVMError, KeyError) as exc:
        raise EmbeddedChainError(f"cannot resume the chain in {path}: {exc!r}") from exc
    if head.block_number != head_number or head.hash.hex() != head_hash:
        raise EmbeddedChainError(
            f"{path} is inconsistent: head block {head.block_number} but metadata says {head_number}"
        )
    return chain


def _endpoints(chain_id: int) -> dict[str, dict[str, Any]]:
    """eth-tester's JSON-RPC table with this chain's id (the stock one answers a constant)."""
    endpoints = {namespace: dict(methods) for namespace, methods in API_ENDPOINTS.items()}
    endpoints["eth"]["chainId"] = lambda _tester, _params: chain_id
    endpoints["net"]["version"] = lambda _tester, _params: str(chain_id)
    return endpoints


class _EmbeddedProvider(EthereumTesterProvider):
    """web3's eth-tester provider, bound to an :class:`EmbeddedChain` and its lock."""

    def __init__(self, chain: EmbeddedChain) -> None:
        super().__init__(ethereum_tester=chain._tester, api_endpoints=_endpoints(chain.chain_id))
        self._chain = chain

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self._chain._request(self, method, params)


class _AsyncEmbeddedProvider(AsyncEthereumTesterProvider):
    """The asyncio twin: each call runs in a worker thread so the event loop never blocks."""

    def __init__(self, chain: EmbeddedChain) -> None:
        AsyncBaseProvider.__init__(self)  # the parent's __init__ would build a throwaway chain
        self.ethereum_tester = chain._tester
        self.api_endpoints = _endpoints(chain.chain_id)
        self._chain = chain

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return await asyncio.to_thread(self._chain._request, self._chain._provider, method, params)
