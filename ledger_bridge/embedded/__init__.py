"""The embedded ledger backend: a durable in-process EVM chain (py-evm) in one SQLite file.

    from web3 import AsyncWeb3
    from ledger_bridge.embedded import EmbeddedChain

    chain = EmbeddedChain.open("var/ledger.sqlite", chain_id=1337, funded=[manufacturer, owner])
    w3 = AsyncWeb3(chain.async_provider)      # or Web3(chain.provider) for synchronous code
    ...
    chain.close()

For the :class:`ledger_bridge.Ledger`, ``EmbeddedBackend(path, funded=[...])`` is the
``LedgerBackend`` (``open() -> Web3``, ``close()``, ``fund()`` from a faucet kept in the file).

What it guarantees:

* **Durable per block.** Every transaction is mined into its own block (automine); the block's
  state, receipts, py-evm's transaction index and a log index are committed to the file in one
  fsync'd SQLite transaction *before* the transaction hash is returned. A transaction whose hash or
  receipt was returned survives a restart, ``kill -9`` and power loss; a crash leaves the file at
  the end of the last committed block, never halfway.
* **Fast to reopen.** Opening resumes from the committed head (no journal replay): a few tens of
  milliseconds whatever the history length.
* **Fast lookups.** Receipts and transactions by hash go through py-evm's transaction index, and
  ``eth_getLogs`` / log filters through the log index, not by scanning blocks.
* **Wall-clock timestamps**: a block's timestamp is ``max(now, parent + 1)`` (py-evm requires
  strictly increasing seconds), so a burst of N transactions within one second runs ahead of the
  clock by up to N seconds and falls back in step when traffic pauses. A chain id and funded accounts fixed at
  genesis and stored with it. Transactions are signed by their senders (``eth_sendRawTransaction``);
  the chain holds no keys. History is append-only: snapshots and reverts are refused.

Async use: py-evm is synchronous. :attr:`EmbeddedChain.async_provider` runs each JSON-RPC call in
a worker thread (``asyncio.to_thread``), so an ``AsyncWeb3`` ledger never blocks its event loop;
calls from any thread are serialised by one lock. ``EmbeddedChain.open`` and ``close`` are quick
blocking calls (milliseconds); wrap them in ``asyncio.to_thread`` if that matters.

Errors: storage problems (cannot open, read or commit the file; an inconsistent or foreign file;
options that contradict the stored genesis) raise :class:`EmbeddedChainError`. After a failed commit
the chain refuses further calls and must be reopened. EVM outcomes (reverts, bad nonces) reach web3
exactly as on eth-tester.
"""

from __future__ import annotations

from ._chain import DEFAULT_BALANCE_WEI, DEFAULT_CHAIN_ID, DEFAULT_GAS_LIMIT, EmbeddedChain
from ._errors import EmbeddedChainError
from ._ledger_backend import EmbeddedBackend

__all__ = [
    "DEFAULT_BALANCE_WEI",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_GAS_LIMIT",
    "EmbeddedBackend",
    "EmbeddedChain",
    "EmbeddedChainError",
]
