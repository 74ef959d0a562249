"""Every custom error keeps its name and meaning on every backend (issue 10, item 4): eth-tester
(py-evm raises the raw bytes), anvil (JSON-RPC code 3 with data), the embedded chain in-process, and
the embedded chain served by ``ledger_bridge.node`` (which used to drop the revert data, so the CLI said
"reverted without a reason"). The CLI prints the error's name and its meaning in words."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector

from ledger_bridge import Ledger, LedgerBackend, LedgerRevert, Role, RpcBackend, Signer
from ledger_bridge.artifacts import CONTRACT_NAMES, load_artifact
from ledger_bridge.reverts import _TEMPLATES, revert_from_data

from .conftest import ETH, Actors
from .helpers import claim_code, device_id, gateway_id, registration


def test_every_custom_error_has_words() -> None:
    """The CLI shows `Name: meaning`; a new error without a template would fall back to raw fields."""
    names = {
        item["name"]
        for contract in CONTRACT_NAMES
        for item in load_artifact(contract).abi
        if item.get("type") == "error"
    }
    missing = sorted(n for n in names if n not in _TEMPLATES and n != "LengthMismatch")
    assert not missing, f"custom errors without words in reverts._TEMPLATES: {missing}"
    assert not set(_TEMPLATES) - names, "templates for errors no contract has"


def _sample(kind: str) -> object:
    if kind == "address":
        return "0x" + "11" * 20
    if kind.startswith("bytes"):
        return bytes(range(1, int(kind[5:]) + 1))
    assert kind.startswith("uint"), kind
    return 1


def test_every_custom_error_decodes_from_its_revert_data() -> None:
    """Every error of both ABIs, from the bytes a node returns, comes back by name with its words: a
    template reading a field the error no longer has would crash the decoding instead."""
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract).abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            data = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})") + encode(
                types, [_sample(t) for t in types]
            )
            got = revert_from_data(data, context="op")
            assert got.error == item["name"], str(got)
            assert str(got).startswith(f"op: {item['name']}: "), str(got)
            if item["name"] in _TEMPLATES:
                assert str(got) == f"op: {item['name']}: {_TEMPLATES[item['name']](got.args_by_name)}"


async def _refusals(ch: Actors) -> dict[str, LedgerRevert]:
    """Provoke the errors the issue names (and a few more) through transactions and views."""
    dev = device_id(1, tag=0xEE)
    await ch.manufacturer.register_device(registration(dev))
    got: dict[str, LedgerRevert] = {}

    async def expect(name: str, coro: object) -> None:
        with pytest.raises(LedgerRevert) as exc:
            await coro  # type: ignore[misc]
        assert exc.value.error == name, str(exc.value)
        got[name] = exc.value

    await expect("BadClaimCode", ch.owner.claim(dev, b"not the code"))
    await expect("DeviceExists", ch.manufacturer.register_device(registration(dev)))
    await ch.owner.claim(dev, claim_code(dev))
    await expect("UnknownPolicy", ch.owner.set_policy(dev, os.urandom(32)))
    await expect("UnknownAnchor", ch.ledger.anchor(os.urandom(32), gateway_id=gateway_id(1)))
    await expect("UnknownDevice", ch.ledger.device(device_id(2, tag=0xEE)))
    await expect("UnknownGateway", ch.stranger.remove_gateway(gateway_id(1)))
    return got


MEANINGS = {
    "BadClaimCode": "the claim code does not match the claim hash of device 0x",
    "DeviceExists": "is already registered",
    "UnknownPolicy": "is not defined",
    "UnknownAnchor": "anchored no batch with Merkle root",
    "UnknownDevice": "is not registered",
    "UnknownGateway": "is not registered",
}


@pytest.mark.asyncio
async def test_errors_keep_their_names_on_this_backend(channel: Actors) -> None:
    got = await _refusals(channel)
    for name, words in MEANINGS.items():
        assert f"{name}: " in str(got[name]) and words in str(got[name]), str(got[name])


@pytest_asyncio.fixture
async def node_channel(tmp_path: Path) -> AsyncIterator[Actors]:
    """A channel on the embedded chain behind `python -m ledger_bridge.node`, as separate processes use it."""
    ready = tmp_path / "url"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger_bridge.node",
            "--path",
            str(tmp_path / "chain.sqlite"),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the ledger node did not start"
            time.sleep(0.05)
        backend: LedgerBackend = RpcBackend(url=ready.read_text().strip(), name="node")
        async with Ledger(backend=backend) as ledger:
            names = [n for n in Actors.__dataclass_fields__ if n != "ledger"]
            signers = {n: Signer.generate(label=n) for n in names}
            for s in signers.values():
                await ledger.fund(s.address, 100 * ETH)
            await ledger.deploy(admin=signers["admin"])
            handles = {n: ledger.actor(s) for n, s in signers.items()}
            await handles["admin"].grant_role(Role.MANUFACTURER, handles["manufacturer"].address)
            await handles["admin"].grant_role(Role.OPERATOR, handles["operator"].address)
            yield Actors(ledger=ledger, **handles)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.asyncio
async def test_the_embedded_node_returns_revert_data(node_channel: Actors) -> None:
    got = await _refusals(node_channel)
    for name, words in MEANINGS.items():
        assert f"{name}: " in str(got[name]) and words in str(got[name]), str(got[name])
        assert "without a reason" not in str(got[name])


@pytest.mark.asyncio
async def test_the_cli_prints_the_name_and_meaning_through_the_node(
    node_channel: Actors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import json

    from ledger_bridge import cli

    ch = node_channel.ledger.channel
    channel = tmp_path / "channel.json"
    channel.write_text(
        json.dumps({"registry": ch.registry, "auth_log": ch.auth_log, "deployed_block": ch.deployed_block})
    )
    url = node_channel.ledger._backend.url  # type: ignore[attr-defined]
    argv = [
        "--rpc",
        url,
        "--channel",
        str(channel),
        "verify-anchor",
        "0x" + "ab" * 32,
        "--gateway-id",
        "gw-1",
    ]
    code = await asyncio.to_thread(cli.main, argv)
    err = capsys.readouterr().err
    assert code == 1
    assert "UnknownAnchor: gateway 0x" in err and "anchored no batch with Merkle root 0x" + "ab" * 32 in err
