"""Writes transactions to an embedded chain forever, printing each one whose receipt came back.

Run as ``python -m tests.ledger_embedded._writer PATH KEY_HEX``; the kill -9 test SIGKILLs it.
Each output line is ``<tx hash hex> <block number> <stored value>``, flushed before the next send.
"""

from __future__ import annotations

import sys

from eth_account import Account
from web3 import Web3

from ledger_bridge.embedded import EmbeddedChain
from tests.ledger_embedded._contract import DEPLOY_GAS, INITCODE, STORE_GAS, signed, word


def main(path: str, key_hex: str) -> None:
    account = Account.from_key(bytes.fromhex(key_hex))
    chain = EmbeddedChain.open(path, funded=[account.address])
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
    main(sys.argv[1], sys.argv[2])
