"""Writes transactions to an embedded chain forever, printing each one whose receipt came back.

Run as ``python -m tests.ledger_embedded._writer PATH KEY_HEX [CRASH_AT]``; the kill -9 test
SIGKILLs it. Each output line is ``<tx hash hex> <block number> <stored value>``, flushed before the
next send. With ``CRASH_AT`` = n the process SIGKILLs itself inside the n-th block commit from now,
after the block's key-value rows were written and before ``COMMIT``: the worst moment.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from eth_account import Account
from web3 import Web3

from ledger_bridge.embedded import EmbeddedChain
from ledger_bridge.embedded._probe import DEPLOY_GAS, INITCODE, STORE_GAS, signed, word


class _CrashingConnection:
    """Passes calls to a sqlite3 connection; SIGKILLs the process at the n-th log-row insert."""

    def __init__(self, connection: Any, crash_at: int) -> None:
        self._connection = connection
        self._left = crash_at

    def executemany(self, sql: str, rows: Any) -> Any:
        result = self._connection.executemany(sql, rows)
        if sql.startswith("INSERT INTO logs"):
            self._left -= 1
            if self._left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def main(path: str, key_hex: str, crash_at: int = 0) -> None:
    account = Account.from_key(bytes.fromhex(key_hex))
    chain = EmbeddedChain.open(path, funded=[account.address])
    if crash_at:
        store = chain._backend.store
        store._db = _CrashingConnection(store._db, crash_at)
    w3 = Web3(chain.provider)
    nonce = w3.eth.get_transaction_count(account.address)
    if nonce == 0:
        tx_hash = w3.eth.send_raw_transaction(
            signed(account, 0, chain.chain_id, to=None, data=INITCODE, gas=DEPLOY_GAS)
        )
        w3.eth.wait_for_transaction_receipt(tx_hash)
        nonce = 1
    contract = Web3.to_checksum_address(
        w3.eth.get_transaction_receipt(w3.eth.get_block(1).transactions[0])["contractAddress"]
    )
    print("ready", flush=True)
    while True:
        raw = signed(account, nonce, chain.chain_id, to=contract, data=word(nonce), gas=STORE_GAS)
        tx_hash = w3.eth.send_raw_transaction(raw)
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        print(tx_hash.hex(), receipt["blockNumber"], nonce, flush=True)
        nonce += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(arg) for arg in sys.argv[3:]))
