"""The log index answers exactly what eth-tester's own log matching would, for any filter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_tester.utils.filters import check_if_address_match, check_if_topics_match
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from ledger_bridge.embedded import EmbeddedChain
from ledger_bridge.embedded._probe import DEPLOY_GAS, INITCODE, STORE_GAS, STORED_TOPIC, signed, word

ACTOR = Account.from_key(b"\x66" * 32)
VALUES = [1, 2, 3, 2, 1, 3, 3]  # repeated values: several logs share topic1


def _build(path: Path) -> tuple[EmbeddedChain, list[str], list[dict]]:
    chain = EmbeddedChain.open(path, funded=[ACTOR.address])
    w3 = Web3(chain.provider)
    nonce = 0

    def send(to: str | None, data: bytes, gas: int) -> dict:
        nonlocal nonce
        tx_hash = w3.eth.send_raw_transaction(signed(ACTOR, nonce, chain.chain_id, to=to, data=data, gas=gas))
        nonce += 1
        return dict(w3.eth.get_transaction_receipt(tx_hash))

    contracts = [str(send(None, INITCODE, DEPLOY_GAS)["contractAddress"]) for _ in range(2)]
    for position, value in enumerate(VALUES):
        send(contracts[position % 2], word(value), STORE_GAS)
    every_log = [dict(log) for log in w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})]
    assert len(every_log) == len(VALUES)
    return chain, contracts, every_log


History = tuple[EmbeddedChain, list[str], list[dict]]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    chain, contracts, every_log = _build(tmp_path_factory.mktemp("logs") / "chain.sqlite")
    yield chain, contracts, every_log
    chain.close()


TOPICS = [STORED_TOPIC, word(1), word(2), word(3), b"\x09" * 32]
topic_position = st.one_of(
    st.none(), st.sampled_from(TOPICS), st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3)
)


@settings(max_examples=150, deadline=None)
@given(
    topics=st.one_of(st.none(), st.lists(topic_position, max_size=3)),
    contract_picks=st.one_of(st.none(), st.integers(0, 1), st.lists(st.integers(0, 1), min_size=1)),
    from_block=st.integers(0, 10),
    span=st.integers(0, 10),
)
def test_index_matches_eth_tester_semantics(
    history: History,
    topics: list | None,
    contract_picks: int | list[int] | None,
    from_block: int,
    span: int,
) -> None:
    chain, contracts, every_log = history
    addresses: str | list[str] | None = (
        contracts[contract_picks] if isinstance(contract_picks, int)
        else None if contract_picks is None
        else [contracts[i] for i in contract_picks]
    )
    to_block = min(from_block + span, chain.head_number)
    query: dict = {"fromBlock": from_block, "toBlock": to_block}
    if topics is not None:
        query["topics"] = topics
    if addresses is not None:
        query["address"] = addresses
    found = [(log["blockNumber"], log["logIndex"]) for log in Web3(chain.provider).eth.get_logs(query)]

    def nested(position: object) -> object:
        return tuple(position) if isinstance(position, list) else position

    wanted_topics = None if topics is None else tuple(nested(p) for p in topics)
    wanted_addresses = tuple(addresses) if isinstance(addresses, list) else addresses
    expected = [
        (log["blockNumber"], log["logIndex"])
        for log in every_log
        if from_block <= log["blockNumber"] <= to_block
        and check_if_address_match(log["address"], wanted_addresses)
        and check_if_topics_match([bytes(t) for t in log["topics"]], wanted_topics)
    ]
    assert found == expected
    MATCHED.append(len(expected))


MATCHED: list[int] = []


def test_the_property_saw_both_hits_and_misses() -> None:
    assert any(MATCHED) and 0 in MATCHED
