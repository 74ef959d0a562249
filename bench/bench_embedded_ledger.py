"""The durable embedded ledger: reopen time with 10,000 transactions of history, and tx/s.

Figures:
* ``embedded_reopen_ms_10k``: median time to reopen a chain holding 10,000 transactions (each
  with a receipt and a log) until it answers ``eth_blockNumber``; Python imports excluded. The
  chain is built once and cached in ``bench/.cache/`` (about a minute), so reruns are fast.
* ``embedded_old_receipt_ms_10k``: fetching the receipt of the oldest transaction on that chain.
* ``embedded_get_logs_ms_10k``: ``eth_getLogs`` for one topic over all 10,000 blocks (one match).
* ``embedded_tx_per_s``: signed transactions sent through web3, each waited for with its receipt
  (explicit gas, one block per transaction, each committed with fsync) on a fresh chain. The
  contract is a tiny store-and-emit one, so this is the chain's own overhead; a real contract's
  execution adds to it (the DIAMS batch figures are in the ledger benchmarks).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from eth_account import Account
from web3 import Web3

from ledger_bridge.embedded import EmbeddedChain
from ledger_bridge.embedded._probe import DEPLOY_GAS, INITCODE, STORE_GAS, STORED_TOPIC, signed, word

HISTORY = 10_000
CACHE = Path(__file__).resolve().parent / ".cache"
ACTOR = Account.from_key(b"\x44" * 32)


def _build_history(path: Path) -> None:
    """A chain with a contract and HISTORY store transactions, written to a temp file then renamed."""
    partial = path.with_suffix(".building")
    partial.unlink(missing_ok=True)
    chain = EmbeddedChain.open(partial, funded=[ACTOR.address])
    tester, chain_id = chain._tester, chain.chain_id  # skip web3's per-call overhead while building
    deploy = signed(ACTOR, 0, chain_id, to=None, data=INITCODE, gas=DEPLOY_GAS)
    deploy_hash = tester.send_raw_transaction("0x" + deploy.hex())
    contract = Web3.to_checksum_address(tester.get_transaction_receipt(deploy_hash)["contract_address"])
    for nonce in range(1, HISTORY + 1):
        raw = signed(ACTOR, nonce, chain_id, to=contract, data=word(nonce), gas=STORE_GAS)
        tester.send_raw_transaction("0x" + raw.hex())
    chain.close()
    partial.rename(path)


def _history_chain() -> Path:
    path = CACHE / f"embedded_{HISTORY}.sqlite"
    if path.exists():
        try:
            with EmbeddedChain.open(path) as chain:
                if chain.head_number == HISTORY + 1:
                    return path
        except Exception:  # a stale or foreign cache: rebuild it
            pass
        path.unlink()
    CACHE.mkdir(exist_ok=True)
    _build_history(path)
    return path


def _reopen_figures(path: Path) -> dict[str, float]:
    reopen_ms, receipt_ms, logs_ms = [], [], []
    for _ in range(5):
        started = time.perf_counter()
        chain = EmbeddedChain.open(path)
        w3 = Web3(chain.provider)
        assert w3.eth.block_number == HISTORY + 1
        reopen_ms.append((time.perf_counter() - started) * 1000)

        oldest = w3.eth.get_block(2)["transactions"][0]
        started = time.perf_counter()
        assert w3.eth.get_transaction_receipt(oldest)["blockNumber"] == 2
        receipt_ms.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "topics": [STORED_TOPIC, word(777)]})
        logs_ms.append((time.perf_counter() - started) * 1000)
        assert len(logs) == 1
        chain.close()
    return {
        "embedded_reopen_ms_10k": statistics.median(reopen_ms),
        "embedded_old_receipt_ms_10k": statistics.median(receipt_ms),
        "embedded_get_logs_ms_10k": statistics.median(logs_ms),
    }


def _tx_per_s(count: int = 300) -> float:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedChain.open(
        Path(tmp) / "chain.sqlite", funded=[ACTOR.address]
    ) as chain:
        w3 = Web3(chain.provider)
        deploy = signed(ACTOR, 0, chain.chain_id, to=None, data=INITCODE, gas=DEPLOY_GAS)
        contract = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(deploy))["contractAddress"]
        started = time.perf_counter()
        for nonce in range(1, count + 1):
            raw = signed(ACTOR, nonce, chain.chain_id, to=contract, data=word(nonce), gas=STORE_GAS)
            receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
            assert receipt["status"] == 1
        return count / (time.perf_counter() - started)


def run() -> dict[str, float]:
    figures = _reopen_figures(_history_chain())
    figures["embedded_tx_per_s"] = _tx_per_s()
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<32} {value:>12,.3f}")
