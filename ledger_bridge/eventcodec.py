"""Decoding contract logs into (event name, arguments), fast enough for a fleet's history.

Why not web3's ``process_log``: it costs about 1-2 ms a log (normalisers, attribute dicts, checks
made for any ABI), and a gateway's first sync of a 10,000-device site reads some 60,000 logs; at that
price the sync outlasted its timeout, one block at a time (the onboarding batches put thousands of
logs in one block). This module decodes the same logs with ``eth_abi`` directly, from tables built once
per ABI, to the same values web3 gives (bytesN and bytes as ``bytes``, addresses checksummed, integers,
strings); ``tests/ledger/test_eventcodec.py`` checks it against web3 on every event of both contracts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address

from .errors import LedgerError


class LogDecodeError(LedgerError):
    """A log whose topics or data do not match its event's ABI (the node sent what the contract
    cannot have emitted): a ledger fault, like a refused request."""


@dataclass(frozen=True)
class _Event:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]
    order: tuple[str, ...]  # argument names in ABI order


def _indexed_value(typ: str, topic: bytes) -> object:
    """An indexed argument from its 32-byte topic. Dynamic types (string, bytes, arrays, tuples) are
    stored as their hash in a topic: the hash is what there is to return, as web3 does."""
    if typ == "address":
        return to_checksum_address(topic[12:])
    if typ.startswith("bytes") and typ != "bytes":
        return bytes(topic[: int(typ[5:])])
    if typ.startswith("uint"):
        return int.from_bytes(topic, "big")
    if typ.startswith("int"):
        return int.from_bytes(topic, "big", signed=True)
    if typ == "bool":
        return topic[-1] == 1
    return bytes(topic)


def _data_value(typ: str, value: Any) -> object:
    return to_checksum_address(value) if typ == "address" else value


class EventCodec:
    """``decode(log)`` -> (event name, {argument: value}) for the events of ``abis``, or None for a
    log of another event (another contract at the same address range, a newer ABI)."""

    def __init__(self, abis: Iterable[Iterable[Mapping[str, Any]]]) -> None:
        self._events: dict[bytes, _Event] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "event" or item.get("anonymous"):
                    continue
                inputs = list(item.get("inputs", ()))
                topic = bytes(event_abi_to_log_topic(dict(item)))  # type: ignore[arg-type]
                self._events[topic] = _Event(
                    name=str(item["name"]),
                    indexed=tuple((str(i["name"]), str(i["type"])) for i in inputs if i.get("indexed")),
                    data_names=tuple(str(i["name"]) for i in inputs if not i.get("indexed")),
                    data_types=tuple(str(i["type"]) for i in inputs if not i.get("indexed")),
                    order=tuple(str(i["name"]) for i in inputs),
                )

    def __repr__(self) -> str:
        return f"EventCodec({len(self._events)} events)"

    def decode(self, log: Mapping[str, Any]) -> tuple[str, dict[str, object]] | None:
        topics = log.get("topics") or ()
        if not topics:
            return None
        event = self._events.get(bytes(topics[0]))
        if event is None:
            return None
        if len(topics) != 1 + len(event.indexed):
            raise LogDecodeError(
                f"{event.name}: {len(topics) - 1} indexed topics, the ABI has {len(event.indexed)}"
            )
        found: dict[str, object] = {}
        for (name, typ), topic in zip(event.indexed, topics[1:], strict=True):
            raw = bytes(topic)
            if len(raw) != 32:
                raise LogDecodeError(f"{event.name}: a topic of {len(raw)} bytes")
            found[name] = _indexed_value(typ, raw)
        if event.data_types:
            try:
                values = abi_decode(list(event.data_types), bytes(log.get("data") or b""))
            except Exception as exc:  # eth_abi's decoding errors have no common public base
                raise LogDecodeError(f"{event.name}: data does not decode ({type(exc).__name__})") from None
            for name, typ, value in zip(event.data_names, event.data_types, values, strict=True):
                found[name] = _data_value(typ, value)
        return event.name, {name: found[name] for name in event.order}
