"""The durable embedded chain: deploy, transact, close, reopen; logs, timestamps, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from web3 import AsyncWeb3, Web3

from ledger_bridge.backends import LedgerBackend
from ledger_bridge.embedded import EmbeddedBackend, EmbeddedChain, EmbeddedChainError
from ledger_bridge.embedded._probe import DEPLOY_GAS, INITCODE, STORE_GAS, STORED_TOPIC, signed, word

ACTOR = Account.from_key(b"\x11" * 32)
OTHER = Account.from_key(b"\x22" * 32)


class Session:
    """One open chain, a Web3 on it, and the actor's next nonce."""

    def __init__(self, path: Path, **options: object) -> None:
        self.chain = EmbeddedChain.open(path, funded=[ACTOR.address], **options)  # type: ignore[arg-type]
        self.w3 = Web3(self.chain.provider)
        self.nonce = self.w3.eth.get_transaction_count(ACTOR.address)

    def send(self, *, to: str | None, data: bytes, gas: int = STORE_GAS) -> dict:
        raw = signed(ACTOR, self.nonce, self.chain.chain_id, to=to, data=data, gas=gas)
        tx_hash = self.w3.eth.send_raw_transaction(raw)
        self.nonce += 1
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=5))

    def deploy(self) -> str:
        receipt = self.send(to=None, data=INITCODE, gas=DEPLOY_GAS)
        assert receipt["status"] == 1
        return str(receipt["contractAddress"])

    def stored(self, contract: str) -> int:
        return int.from_bytes(self.w3.eth.call({"to": contract, "from": ACTOR.address}), "big")


def test_state_receipts_and_logs_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    first = Session(path, chain_id=4242)
    contract = first.deploy()
    receipts = [first.send(to=contract, data=word(value)) for value in range(1, 21)]
    head = first.w3.eth.block_number
    first.chain.close()

    again = Session(path)
    assert again.chain.chain_id == 4242 and again.w3.eth.chain_id == 4242
    assert again.w3.eth.block_number == head == 21
    assert again.stored(contract) == 20
    assert again.nonce == 21
    for value, receipt in enumerate(receipts, start=1):
        found = again.w3.eth.get_transaction_receipt(receipt["transactionHash"])
        assert found["blockNumber"] == receipt["blockNumber"] and found["status"] == 1
        assert found["logs"][0]["topics"][1] == word(value)
        assert again.w3.eth.get_transaction(receipt["transactionHash"])["input"][-32:] == word(value)
    logs = again.w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": contract})
    assert [int.from_bytes(log["data"], "big") for log in logs] == list(range(1, 21))

    # the chain goes on from where it was
    again.send(to=contract, data=word(99))
    assert again.stored(contract) == 99 and again.w3.eth.block_number == 22
    again.chain.close()


def test_log_queries_use_the_index_with_json_rpc_filter_semantics(tmp_path: Path) -> None:
    session = Session(tmp_path / "chain.sqlite")
    first, second = session.deploy(), session.deploy()
    for value in range(1, 7):
        session.send(to=first if value % 2 else second, data=word(value))
    get_logs = session.w3.eth.get_logs

    def values(**params: object) -> list[int]:
        query = {"fromBlock": 0, "toBlock": "latest", **params}
        return [int.from_bytes(log["data"], "big") for log in get_logs(query)]  # type: ignore[arg-type]

    assert values() == [1, 2, 3, 4, 5, 6]
    assert values(address=first) == [1, 3, 5]
    assert values(address=[first, second]) == [1, 2, 3, 4, 5, 6]
    assert values(topics=[STORED_TOPIC, word(4)]) == [4]
    assert values(topics=[None, [word(2), word(5)]]) == [2, 5]
    assert values(topics=[None, None, None]) == []  # the log has 2 topics: a 3rd position never matches
    assert values(fromBlock=5, toBlock=6) == [3, 4]
    assert values(topics=[b"\x00" * 32]) == []
    blocks = [log["blockNumber"] for log in get_logs({"fromBlock": 0, "toBlock": "latest"})]
    assert blocks == sorted(blocks) and all(log["logIndex"] == 0 for log in get_logs({"fromBlock": 0}))

    # a filter backfills from the index, then receives new logs as blocks are mined
    log_filter = session.w3.eth.filter({"fromBlock": 4, "address": first})
    assert [int.from_bytes(e["data"], "big") for e in log_filter.get_all_entries()] == [3, 5]
    session.send(to=first, data=word(7))
    session.send(to=second, data=word(8))
    assert [int.from_bytes(e["data"], "big") for e in log_filter.get_new_entries()][-1] == 7
    session.chain.close()


def test_block_timestamps_follow_the_clock_and_strictly_increase(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    session = Session(tmp_path / "chain.sqlite", clock=lambda: now[0])
    contract = session.deploy()
    now[0] += 3600  # an idle hour: stock eth-tester would stamp the next block with the old time
    receipt = session.send(to=contract, data=word(1))
    assert session.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == 1_800_003_600
    burst = [session.send(to=contract, data=word(v))["blockNumber"] for v in range(3)]  # same second
    stamps = [session.w3.eth.get_block(number)["timestamp"] for number in burst]
    assert stamps == [1_800_003_601, 1_800_003_602, 1_800_003_603]
    session.chain.close()


def test_receipts_of_old_blocks_are_found_without_scanning(tmp_path: Path) -> None:
    session = Session(tmp_path / "chain.sqlite")
    contract = session.deploy()
    oldest = session.send(to=contract, data=word(1))
    for value in range(150):
        session.send(to=contract, data=word(value))
    session.chain.close()

    # how fast: bench's embedded_reopen_ms_10k and embedded_old_receipt_ms_10k
    again = Session(tmp_path / "chain.sqlite")
    for _ in range(20):
        assert again.w3.eth.get_transaction_receipt(oldest["transactionHash"])["blockNumber"] == 2
    again.chain.close()


async def _async_round_trip(path: Path) -> None:
    chain = EmbeddedChain.open(path, funded=[ACTOR.address])
    try:
        w3 = AsyncWeb3(chain.async_provider)
        assert await w3.eth.chain_id == chain.chain_id
        raw = signed(ACTOR, 0, chain.chain_id, to=None, data=INITCODE, gas=DEPLOY_GAS)
        receipt = await w3.eth.wait_for_transaction_receipt(await w3.eth.send_raw_transaction(raw))
        assert receipt["status"] == 1 and await w3.eth.block_number == 1
    finally:
        chain.close()


@pytest.mark.asyncio
async def test_async_provider_runs_calls_off_the_event_loop(tmp_path: Path) -> None:
    await _async_round_trip(tmp_path / "chain.sqlite")


def test_faucet_and_ledger_backend(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "chain.sqlite", funded=[ACTOR.address])
    assert isinstance(backend, LedgerBackend)
    w3 = backend.open()
    backend.fund(w3, OTHER.address, 10**18)
    assert w3.eth.get_balance(OTHER.address) == 10**18
    assert backend.chain is not None and backend.chain._faucet is not None
    assert bytes(backend.chain._faucet.key).hex() not in repr(backend.chain) + repr(backend)
    backend.close()
    w3 = backend.open()  # the faucet key is kept in the file
    backend.fund(w3, OTHER.address, 1)
    assert w3.eth.get_balance(OTHER.address) == 10**18 + 1
    backend.close()
    with pytest.raises(EmbeddedChainError, match="no faucet"):
        EmbeddedChain.open(tmp_path / "plain.sqlite").fund(OTHER.address, 1)


def test_contradicting_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    EmbeddedChain.open(path, chain_id=7, funded=[ACTOR.address]).close()
    with pytest.raises(EmbeddedChainError, match="chain id 7"):
        EmbeddedChain.open(path, chain_id=8)
    with pytest.raises(EmbeddedChainError, match="funded"):
        EmbeddedChain.open(path, funded=[OTHER.address])
    EmbeddedChain.open(path, chain_id=7, funded=[ACTOR.address]).close()  # same genesis: fine

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(EmbeddedChainError, match="cannot open"):
        EmbeddedChain.open(garbage)

    tampered = tmp_path / "tampered.sqlite"
    session = Session(tampered)
    session.deploy()
    session.chain.close()
    with sqlite3.connect(tampered) as db:
        db.execute("UPDATE meta SET value = '5' WHERE name = 'head_number'")
    with pytest.raises(EmbeddedChainError, match="inconsistent"):
        EmbeddedChain.open(tampered)
    with pytest.raises(ValueError):
        EmbeddedChain.open(tmp_path / "x.sqlite", chain_id=0)


def test_a_failed_commit_stops_the_chain_and_reopening_resumes(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "chain.sqlite"
    session = Session(path)
    contract = session.deploy()
    session.send(to=contract, data=word(1))
    store = session.chain._backend.store

    def refuse(**_: object) -> None:
        raise EmbeddedChainError("cannot commit a block to the chain file: disk full")

    monkeypatch.setattr(store, "commit_block", refuse)
    with pytest.raises(EmbeddedChainError, match="disk full"):
        session.send(to=contract, data=word(2))
    with pytest.raises(EmbeddedChainError, match="reopened"):
        session.w3.eth.block_number
    monkeypatch.undo()
    session.chain.close()

    again = Session(path)
    assert again.w3.eth.block_number == 2 and again.stored(contract) == 1
    again.chain.close()
    with pytest.raises(EmbeddedChainError, match="closed"):
        again.w3.eth.block_number


def test_history_is_append_only(tmp_path: Path) -> None:
    session = Session(tmp_path / "chain.sqlite")
    with pytest.raises(EmbeddedChainError, match="refused"):
        session.w3.provider.make_request("evm_snapshot", [])  # type: ignore[arg-type]
    session.chain.close()


def test_a_second_opener_is_refused_while_the_chain_is_open(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = EmbeddedChain.open(path)
    with pytest.raises(EmbeddedChainError, match="in use"):
        EmbeddedChain.open(path)
    chain.close()
    EmbeddedChain.open(path).close()


REVERTER = bytes([0x60, 5, 0x60, 12, 0x60, 0, 0x39, 0x60, 5, 0x60, 0, 0xF3]) + bytes([0x60, 0, 0x60, 0, 0xFD])


def test_reverts_and_refused_transactions_leave_the_chain_usable(tmp_path: Path) -> None:
    session = Session(tmp_path / "chain.sqlite")
    contract = session.deploy()
    reverter = session.send(to=None, data=REVERTER, gas=DEPLOY_GAS)["contractAddress"]
    assert session.send(to=reverter, data=b"")["status"] == 0  # mined, reverted
    with pytest.raises(TransactionFailed):  # as on stock eth-tester: raw revert data, no decoding
        session.w3.eth.call({"to": reverter, "from": ACTOR.address})
    stale = signed(ACTOR, 0, session.chain.chain_id, to=contract, data=word(5), gas=STORE_GAS)
    with pytest.raises(Exception, match=r"[Nn]once"):
        session.w3.eth.send_raw_transaction(stale)
    assert session.send(to=contract, data=word(6))["status"] == 1
    assert session.stored(contract) == 6 and session.w3.eth.block_number == 4
    session.chain.close()


FUNDED = [Account.from_key(bytes([0x50 + i]) * 32) for i in range(4)]


async def _concurrent_senders(path: Path) -> None:
    chain = EmbeddedChain.open(path, funded=[account.address for account in FUNDED])
    try:
        w3 = AsyncWeb3(chain.async_provider)

        async def sender(account: Account) -> list[int]:
            blocks = []
            for nonce in range(3):
                raw = signed(account, nonce, chain.chain_id, to=OTHER.address, data=b"", gas=21_000)
                receipt = await w3.eth.wait_for_transaction_receipt(await w3.eth.send_raw_transaction(raw))
                blocks.append(receipt["blockNumber"])
            return blocks

        async def reader() -> None:
            for _ in range(20):
                await w3.eth.get_logs({"fromBlock": 0})
                await w3.eth.get_block("latest")

        results = await asyncio.gather(*(sender(account) for account in FUNDED), reader())
        blocks = sorted(b for result in results[:-1] for b in result)  # type: ignore[union-attr]
        assert blocks == list(range(1, 13))  # one block each, none lost or shared
    finally:
        chain.close()


@pytest.mark.asyncio
async def test_concurrent_async_calls_are_serialised(tmp_path: Path) -> None:
    await _concurrent_senders(tmp_path / "chain.sqlite")


def test_public_names_match_all() -> None:
    import ledger_bridge.embedded as package

    public = {name for name in vars(package) if not name.startswith("_")} - {"annotations"}
    assert public == set(package.__all__)
