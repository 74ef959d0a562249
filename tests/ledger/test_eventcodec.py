"""The fast log decoder gives exactly what web3's ``process_log`` gives, on every event of both
contracts, and refuses a log that does not match its event's ABI with the ledger's own error."""

from __future__ import annotations

import os

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from ledger_bridge.artifacts import load_artifact
from ledger_bridge.errors import LedgerError
from ledger_bridge.eventcodec import EventCodec, LogDecodeError

ARTIFACTS = [load_artifact("DeviceRegistry"), load_artifact("AuthenticationLog")]
ADDRESS = to_checksum_address("0x" + "11" * 20)


def _value(typ: str) -> object:
    if typ == "address":
        return "0x" + os.urandom(20).hex()
    if typ == "bytes":
        return os.urandom(77)
    if typ.startswith("bytes"):
        return os.urandom(int(typ[5:]))
    if typ.startswith(("uint", "int")):
        return int.from_bytes(os.urandom(3), "big")
    if typ == "bool":
        return True
    if typ == "string":
        return "telemetry,status"
    raise AssertionError(f"an event type this test does not make: {typ}")


def _log(event: dict) -> dict:
    indexed = [i for i in event["inputs"] if i["indexed"]]
    data = [i for i in event["inputs"] if not i["indexed"]]
    return {
        "topics": [HexBytes(event_abi_to_log_topic(event))]
        + [HexBytes(encode([i["type"]], [_value(i["type"])])) for i in indexed],
        "data": HexBytes(encode([i["type"] for i in data], [_value(i["type"]) for i in data])),
        "address": ADDRESS,
        "blockNumber": 7,
        "blockHash": HexBytes(os.urandom(32)),
        "transactionHash": HexBytes(os.urandom(32)),
        "transactionIndex": 0,
        "logIndex": 3,
        "removed": False,
    }


EVENTS = [(art, item) for art in ARTIFACTS for item in art.abi if item.get("type") == "event"]


@pytest.mark.parametrize("art,event", EVENTS, ids=[e["name"] for _, e in EVENTS])
def test_every_event_decodes_as_web3_decodes_it(art, event) -> None:
    codec = EventCodec([a.abi for a in ARTIFACTS])
    contract = Web3().eth.contract(address=ADDRESS, abi=art.abi)
    for _ in range(3):
        log = _log(event)
        expected = dict(contract.events[event["name"]]().process_log(log)["args"])
        name, args = codec.decode(log)
        assert name == event["name"]
        assert args == expected
        assert [type(v) for v in args.values()] == [type(v) for v in expected.values()]
        assert list(args) == [i["name"] for i in event["inputs"]]


def test_a_log_of_another_event_is_skipped_and_a_malformed_one_is_a_ledger_error() -> None:
    codec = EventCodec([a.abi for a in ARTIFACTS])
    event = next(e for _, e in EVENTS if e["name"] == "GatewayAuthorized")
    assert codec.decode({**_log(event), "topics": [HexBytes(os.urandom(32))]}) is None
    assert codec.decode({**_log(event), "topics": []}) is None
    short = {**_log(event), "topics": _log(event)["topics"][:1]}
    with pytest.raises(LogDecodeError, match="GatewayAuthorized: 0 indexed topics"):
        codec.decode(short)
    with pytest.raises(LedgerError, match="data does not decode"):
        codec.decode({**_log(event), "data": HexBytes(b"\x00" * 5)})
