"""eth-tester on a durable py-evm chain: one committed SQLite transaction per mined block.

Strategy: eth-tester already turns JSON-RPC into py-evm calls (web3's ``EthereumTesterProvider``
speaks to an ``EthereumTester``, which speaks to a backend). Three of its behaviours do not suit a
long-lived chain, so they are replaced here and nothing else is:

* **Mining** (:meth:`DurablePyEVMBackend.mine_blocks`): after py-evm mines a block, the block's
  buffered writes and its log index rows are committed to the file before the block hash is
  returned, so a transaction hash handed back to web3 is already durable.
* **Lookups by hash**: stock eth-tester walks blocks backwards for every receipt; here py-evm's own
  transaction index (written with the block) gives the block number and position directly.
* **Logs** (:class:`IndexedEthereumTester`): stock eth-tester re-executes a receipt lookup per
  transaction in the range; here a SQLite log index answers ``eth_getLogs`` and filter backfills.

Block timestamps follow the wall clock: eth-tester prepares the next block's header right after
mining, so after an idle hour the next block would carry a stale time. The pending header's
timestamp is refreshed when its first transaction arrives (``max(now, parent + 1)``: py-evm
requires strictly increasing timestamps).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from eth.chains.base import MiningChain
from eth.exceptions import HeaderNotFound
from eth.exceptions import TransactionNotFound as EVMTransactionNotFound
from eth.vm.forks.cancun.state import get_total_blob_gas
from eth.vm.forks.prague import PragueVM
from eth_tester import EthereumTester
from eth_tester.backends.pyevm import PyEVMBackend
from eth_tester.backends.pyevm.serializers import serialize_transaction, serialize_transaction_receipt
from eth_tester.exceptions import TransactionNotFound
from eth_tester.utils.filters import Filter, check_if_log_matches
from eth_typing import BlockNumber, Hash32

from ._errors import EmbeddedChainError
from ._store import ChainStore, LogRow, TopicFilter

ZERO_ADDRESS = b"\x00" * 20


def chain_class(chain_id: int) -> type[MiningChain]:
    """A post-merge (Prague) automining chain class with this chain id and a constant gas limit."""

    class EmbeddedMiningChain(MiningChain):
        vm_configuration = ((BlockNumber(0), PragueVM),)

        def create_header_from_parent(self, parent_header: Any, **header_params: Any) -> Any:
            return super().create_header_from_parent(
                parent_header, **{**header_params, "gas_limit": parent_header.gas_limit}
            )

        def get_transaction_builder(self) -> Any:
            return self.get_vm().get_transaction_builder()

    EmbeddedMiningChain.chain_id = chain_id
    return EmbeddedMiningChain


def log_rows_of_block(block: Any, receipts: Sequence[Any]) -> list[LogRow]:
    """The log index rows of a mined block (block-wide log indexes, as JSON-RPC numbers them)."""
    rows: list[LogRow] = []
    for tx_index, (transaction, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        for log in receipt.logs:
            topics = [topic.to_bytes(32, "big") for topic in log.topics]
            topics += [None] * (4 - len(topics))
            rows.append(
                (
                    block.number,
                    len(rows),
                    tx_index,
                    transaction.hash,
                    block.hash,
                    log.address,
                    topics[0],
                    topics[1],
                    topics[2],
                    topics[3],
                    log.data,
                )
            )
    return rows


class DurablePyEVMBackend(PyEVMBackend):  # type: ignore[misc]
    """A ``PyEVMBackend`` whose chain lives in a :class:`ChainStore`, committed per block."""

    def __init__(self, chain: MiningChain, store: ChainStore, *, clock: Callable[[], float]) -> None:
        # PyEVMBackend.__init__ would build a fresh in-memory chain: set the state directly.
        self.chain = chain
        self.store = store
        self.account_keys: tuple[Any, ...] = ()
        self._clock = clock
        self._broken: str | None = None

    # Mining and durability -----------------------------------------------------------------

    def check_usable(self) -> None:
        if self._broken is not None:
            raise EmbeddedChainError(f"the chain must be reopened: {self._broken}")

    def refresh_pending_timestamp(self) -> None:
        """Give an empty pending block the current time (never earlier than parent + 1)."""
        chain = self.chain
        if chain.get_block().transactions:
            return
        parent = chain.get_canonical_head()
        timestamp = max(int(self._clock()), parent.timestamp + 1)
        if chain.header.timestamp != timestamp:
            chain.header = chain.header.copy(timestamp=timestamp)

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = ZERO_ADDRESS) -> tuple[bytes, ...]:
        hashes = []
        for _ in range(num_blocks):
            self.check_usable()
            self.refresh_pending_timestamp()
            transactions = self.chain.get_block().transactions
            block = self.chain.mine_block(
                coinbase=coinbase,
                mix_hash=os.urandom(32),  # stands in for prevrandao, as eth-tester does
                blob_gas_used=sum(get_total_blob_gas(tx) for tx in transactions),
            )
            self.commit(block)
            hashes.append(block.hash)
        return tuple(hashes)

    def commit(self, block: Any) -> None:
        """Make ``block`` (just mined or the genesis) durable with its log index rows."""
        try:
            receipts = block.get_receipts(self.chain.chaindb)
            self.store.commit_block(
                meta={"head_number": str(block.number), "head_hash": block.hash.hex()},
                log_rows=log_rows_of_block(block, receipts),
            )
        except EmbeddedChainError as exc:
            self._broken = str(exc)
            raise

    def send_raw_transaction(self, raw_transaction: bytes) -> bytes:
        self.check_usable()
        self.refresh_pending_timestamp()
        result: bytes = super().send_raw_transaction(raw_transaction)
        return result

    def send_signed_transaction(self, signed_transaction: Any, block_number: Any = "latest") -> bytes:
        self.check_usable()
        self.refresh_pending_timestamp()
        result: bytes = super().send_signed_transaction(signed_transaction, block_number)
        return result

    def send_transaction(self, transaction: Any) -> bytes:
        self.check_usable()
        self.refresh_pending_timestamp()
        result: bytes = super().send_transaction(transaction)
        return result

    # Lookups through py-evm's transaction index ----------------------------------------------

    def _find_transaction(self, transaction_hash: bytes) -> tuple[Any, Any, int, bool]:
        pending = self.chain.get_block()
        for index, transaction in enumerate(pending.transactions):
            if transaction.hash == transaction_hash:
                return pending, transaction, index, True
        try:
            block_number, index = self.chain.chaindb.get_transaction_index(Hash32(transaction_hash))
            block = self.chain.get_canonical_block_by_number(block_number)
        except (EVMTransactionNotFound, HeaderNotFound) as exc:
            raise TransactionNotFound(f"No transaction found for hash 0x{transaction_hash.hex()}") from exc
        return block, block.transactions[index], index, False

    def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
        block, transaction, index, is_pending = self._find_transaction(transaction_hash)
        return serialize_transaction(block, transaction, index, is_pending)

    def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
        block, transaction, index, is_pending = self._find_transaction(transaction_hash)
        receipts = block.get_receipts(self.chain.chaindb)
        return serialize_transaction_receipt(
            block, receipts, transaction, index, is_pending, self.chain.get_vm()
        )

    # History is append-only on a durable chain ------------------------------------------------

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise EmbeddedChainError("snapshots, reverts, resets and time travel are refused on a durable chain")

    take_snapshot = revert_to_snapshot = reset_to_genesis = time_travel = _refuse


def raw_log_entry(row: LogRow) -> dict[str, Any]:
    """A log index row as eth-tester's backend serialises a log (before normalisation)."""
    (block_number, log_index, tx_index, tx_hash, block_hash, address, t0, t1, t2, t3, data) = row
    return {
        "type": "mined",
        "log_index": log_index,
        "transaction_index": tx_index,
        "transaction_hash": tx_hash,
        "block_hash": block_hash,
        "block_number": block_number,
        "address": address,
        "data": data,
        "topics": [topic for topic in (t0, t1, t2, t3) if topic is not None],
    }


def _addresses(raw_address: Any) -> Sequence[bytes]:
    if raw_address is None:
        return ()
    if isinstance(raw_address, bytes):
        return (raw_address,)
    return tuple(raw_address)


def _topics(raw_topics: Any) -> Sequence[TopicFilter]:
    return () if raw_topics is None else tuple(raw_topics)


class IndexedEthereumTester(EthereumTester):  # type: ignore[misc]
    """An ``EthereumTester`` answering log queries from the store's log index."""

    backend: DurablePyEVMBackend

    def _block_number(self, raw_block: Any) -> int:
        if isinstance(raw_block, int):
            return raw_block
        number: int = self.get_block_by_number(raw_block)["number"]
        return number

    def _indexed_logs(
        self, from_block: int, to_block: int, raw_address: Any, raw_topics: Any
    ) -> list[dict[str, Any]]:
        rows = self.backend.store.find_logs(
            from_block=from_block,
            to_block=to_block,
            addresses=_addresses(raw_address),
            topics=_topics(raw_topics),
        )
        return [raw_log_entry(row) for row in rows]

    def _normalized_filter(self, **params: Any) -> tuple[Any, Any, Any, Any]:
        self.validator.validate_inbound_filter_params(**params)
        result: tuple[Any, Any, Any, Any] = self.normalizer.normalize_inbound_filter_params(**params)
        return result

    def get_logs(
        self, from_block: Any = None, to_block: Any = None, address: Any = None, topics: Any = None
    ) -> tuple[Any, ...]:
        raw_from, raw_to, raw_address, raw_topics = self._normalized_filter(
            from_block=from_block, to_block=to_block, address=address, topics=topics
        )
        lower = self._block_number("latest" if raw_from is None else raw_from)
        upper = self._block_number("latest" if raw_to is None else raw_to)
        entries = self._indexed_logs(lower, upper, raw_address, raw_topics)
        return tuple(self.normalizer.normalize_outbound_log_entry(entry) for entry in entries)

    def create_log_filter(
        self, from_block: Any = None, to_block: Any = None, address: Any = None, topics: Any = None
    ) -> Any:
        # As stock eth-tester, but the backfill of past logs comes from the index.
        raw_from, raw_to, raw_address, raw_topics = self._normalized_filter(
            from_block=from_block, to_block=to_block, address=address, topics=topics
        )
        params = {"from_block": raw_from, "to_block": raw_to, "addresses": raw_address, "topics": raw_topics}
        log_filter = Filter(filter_params=params, filter_fn=partial(check_if_log_matches, **params))
        raw_filter_id = next(self._filter_counter)
        self._log_filters[raw_filter_id] = log_filter
        if isinstance(raw_from, int):
            head = self._block_number("latest")
            upper = min(raw_to, head) if isinstance(raw_to, int) else head
            for entry in self._indexed_logs(raw_from, upper, raw_address, raw_topics):
                log_filter.add(entry)
        return self.normalizer.normalize_outbound_filter_id(raw_filter_id)
