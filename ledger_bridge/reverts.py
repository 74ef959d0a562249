"""Turns revert data into `LedgerRevert` errors in words, decoding custom errors from the contracts' ABIs.

Both backends end here: py-evm raises `TransactionFailed` carrying the raw revert bytes in its message,
web3 over JSON-RPC raises `ContractCustomError` / `ContractLogicError` with hex data, and a mined
transaction that failed is replayed as a call to recover its data.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from .artifacts import CONTRACT_NAMES, load_artifact
from .errors import LedgerRevert
from .model import DeviceState, Role

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)

_Fmt = Callable[[Mapping[str, Any]], str]


def _dev(a: Mapping[str, Any]) -> str:
    return f"device 0x{a['id'].hex()}"


def _text32(value: bytes) -> str:
    return value.rstrip(b"\0").decode("ascii", "replace")


_TEMPLATES: Mapping[str, _Fmt] = {
    "IllegalTransition": lambda a: f"{_dev(a)} is {DeviceState(a['current']).label}, cannot {a['operation']}",
    "UnknownDevice": lambda a: f"{_dev(a)} is not registered",
    "DeviceExists": lambda a: f"{_dev(a)} is already registered",
    "NotOwner": lambda a: f"{a['account']} is not the owner of {_dev(a)}",
    "NotOwnerOrAdmin": lambda a: f"{a['account']} is neither the owner of {_dev(a)} nor a channel admin",
    "NotPendingOwner": lambda a: f"{a['account']} is not the pending new owner of {_dev(a)}",
    "BadClaimCode": lambda a: f"the claim code does not match the claim hash of {_dev(a)}",
    "MaintainerNotApproved": lambda a: (
        f"the owner of {_dev(a)} has not approved maintainer {a['maintainer']}"
    ),
    "AccessControlUnauthorizedAccount": lambda a: f"{a['account']} lacks the role {a['neededRole']}",
    "EmptyValue": lambda a: f"{_text32(a['field'])} must not be empty",
    "InvalidAddress": lambda a: f"address {a['account']} is not acceptable here",
    "GatewayExists": lambda a: f"gateway 0x{a['gatewayId'].hex()} is already registered",
    "UnknownGateway": lambda a: f"gateway 0x{a['gatewayId'].hex()} is not registered",
    "GatewayNotAuthorized": lambda a: f"gateway 0x{a['gatewayId'].hex()} is not authorized for {_dev(a)}",
    "NotGatewayAccount": lambda a: f"{a['account']} is not the account of gateway 0x{a['gatewayId'].hex()}",
    "BadSealedKey": lambda a: f"a sealed key of {a['length']} bytes is not acceptable",
    "UnknownPolicy": lambda a: f"policy 0x{a['policyId'].hex()} is not defined",
    "PolicyFrozen": lambda a: f"policy 0x{a['policyId'].hex()} is shared, so nobody may change it",
    "PolicyNotShared": lambda a: (
        f"policy 0x{a['policyId'].hex()} belongs to another owner and was not shared with {a['account']}"
    ),
    "NotGatewayOperator": lambda a: (
        f"{a['account']} is neither the operator of gateway 0x{a['gatewayId'].hex()} nor a channel admin"
    ),
    "EpochNotBumped": lambda a: (
        f"gateway 0x{a['gatewayId'].hex()} changed its key after {_dev(a)} was sealed to it at epoch "
        f"{a['epoch']}: deauthorize it first (bumps the epoch), then seal for the new key"
    ),
    "NotManufacturer": lambda a: f"{a['account']} is not the manufacturer of {_dev(a)}",
    "DeviceKeyExists": lambda a: f"{_dev(a)} already has a registered device key",
    "NoDeviceKey": lambda a: f"{_dev(a)} has no registered device key, so it cannot be re-keyed",
    "NoRekeyPending": lambda a: (
        f"{_dev(a)} has no re-key pending (it is not waiting for a new owner's re-key)"
    ),
    "RekeyPending": lambda a: (
        f"{_dev(a)} changed owner: re-key it and record the confirmation (confirm-rekey) before "
        "authorizing gateways"
    ),
    "NotServingGateway": lambda a: f"gateway 0x{a['gatewayId'].hex()} is not authorized for {_dev(a)}",
    "StreamsTooLong": lambda a: f"stream lists of {a['length']} bytes are too long",
    "InvalidRegistry": lambda a: "the registry address is not acceptable",
    "BadBatch": lambda a: (
        f"a batch of {a['count']} records over sequences {a['firstSeq']}..{a['lastSeq']} is malformed"
    ),
    "AccessControlBadConfirmation": lambda a: "an account can only renounce its own roles",
    "SequenceReplay": lambda a: (
        f"gateway 0x{a['gatewayId'].hex()} already anchored up to sequence "
        f"{a['nextExpected'] - 1}; batch starts at {a['firstSeq']}"
    ),
    "UnknownAnchor": lambda a: (
        f"gateway 0x{a['gatewayId'].hex()} anchored no batch with Merkle root 0x{a['merkleRoot'].hex()}"
    ),
    "AnchorExists": lambda a: (
        f"gateway 0x{a['gatewayId'].hex()} already anchored Merkle root 0x{a['merkleRoot'].hex()}"
    ),
}


@cache
def _errors_by_selector() -> Mapping[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract).abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[bytes(selector)] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


@cache
def _functions_by_selector() -> Mapping[bytes, str]:
    table: dict[bytes, str] = {}
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract).abi:
            if item.get("type") == "function":
                types = ",".join(_abi_type(i) for i in item["inputs"])
                table[bytes(function_signature_to_4byte_selector(f"{item['name']}({types})"))] = item["name"]
    return table


def _abi_type(item: Mapping[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + kind[len("tuple") :]
    return kind


def _humanize(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if name == "neededRole" and isinstance(value, bytes):
        role = Role.from_id(value)
        return role.value if role else f"0x{value.hex()}"
    if name == "operation" and isinstance(value, bytes):
        return _functions_by_selector().get(value, f"0x{value.hex()}")
    return value


def revert_from_data(data: bytes, *, context: str = "") -> LedgerRevert:
    """A `LedgerRevert` in words for raw revert data (possibly empty)."""
    prefix = f"{context}: " if context else ""
    if not data:
        return LedgerRevert(f"{prefix}reverted without a reason (out of gas or a failed require)", error="")
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            (reason,) = decode(["string"], body)
            return LedgerRevert(f"{prefix}{reason}", error="Error", args_by_name={"reason": reason})
        if selector == _PANIC:
            (code,) = decode(["uint256"], body)
            return LedgerRevert(f"{prefix}Panic 0x{code:02x}", error="Panic", args_by_name={"code": code})
        known = _errors_by_selector().get(selector)
        if known is None:
            return LedgerRevert(f"{prefix}unknown custom error 0x{selector.hex()}", error="")
        name, names, types = known
        args = {n: _humanize(n, v) for n, v in zip(names, decode(types, body), strict=True)}
    except DecodingError:
        return LedgerRevert(f"{prefix}malformed revert data 0x{data.hex()}", error="")
    template = _TEMPLATES.get(name)
    words = template(args) if template else ", ".join(f"{k}={_show(v)}" for k, v in args.items())
    return LedgerRevert(f"{prefix}{name}: {words}", error=name, args_by_name=args)


def _show(value: Any) -> str:
    return f"0x{value.hex()}" if isinstance(value, bytes) else str(value)


def revert_data_of(exc: BaseException) -> bytes | None:
    """The revert bytes carried by a foreign exception, or None when it is not a revert."""
    from eth_tester.exceptions import TransactionFailed
    from web3.exceptions import ContractLogicError

    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        return b""
    if isinstance(exc, TransactionFailed):
        return _bytes_in_message(str(exc.args[0]) if exc.args else "")
    return None


def _bytes_in_message(message: str) -> bytes:
    """py-evm formats the revert bytes as a Python literal inside its message: recover them."""
    for marker in ("b'", 'b"'):
        at = message.find(marker)
        if at >= 0:
            try:
                value = ast.literal_eval(message[at:])
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, bytes):
                return value
    return b""
