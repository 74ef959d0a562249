"""Fixtures for the ledger conformance suite: the same tests on stock eth-tester (py-evm) and on anvil."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from ledger_bridge import EthereumTesterBackend, Ledger, LedgerBackend, Role, RpcBackend, Signer
from ledger_bridge.actor import ActorHandle
from tests.conftest import require

LEDGER_DIR = Path(__file__).resolve().parents[2] / "ledger_bridge"
ANVIL = LEDGER_DIR / "node_modules" / "@foundry-rs"
ETH = 10**18


def anvil_binary() -> Path | None:
    """The anvil executable shipped inside the npm package for this platform."""
    if not ANVIL.is_dir():
        return None
    for candidate in sorted(ANVIL.glob("anvil-*/bin/anvil")):
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    binary = anvil_binary()
    require(binary is not None, "anvil (npm @foundry-rs/anvil in ledger_bridge/node_modules)")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent", "--gas-limit", "30000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(OSError):
            req = urllib.request.Request(
                url,
                data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=1):
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"anvil did not start: {err}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(params=["eth-tester", "anvil", "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerBackend:
    if request.param == "anvil":
        return RpcBackend(url=request.getfixturevalue("anvil_url"), name="anvil")
    if request.param == "embedded":
        from ledger_bridge.embedded import EmbeddedBackend

        return EmbeddedBackend(tmp_path / "chain.sqlite")
    return EthereumTesterBackend()


@dataclass(frozen=True, kw_only=True)
class Actors:
    """Every actor of a channel, each with its own key and no role beyond its own."""

    ledger: Ledger
    admin: ActorHandle
    manufacturer: ActorHandle
    owner: ActorHandle
    new_owner: ActorHandle
    maintainer: ActorHandle
    operator: ActorHandle
    gateway: ActorHandle
    stranger: ActorHandle


@pytest_asyncio.fixture
async def channel(backend: LedgerBackend) -> AsyncIterator[Actors]:
    """A freshly deployed channel with one actor per role."""
    async with Ledger(backend=backend) as ledger:
        signers = {
            name: Signer.generate(label=name) for name in Actors.__dataclass_fields__ if name != "ledger"
        }
        for signer in signers.values():
            await ledger.fund(signer.address, 100 * ETH)
        await ledger.deploy(admin=signers["admin"])
        handles = {name: ledger.actor(s) for name, s in signers.items()}
        admin = handles["admin"]
        await admin.grant_role(Role.MANUFACTURER, handles["manufacturer"].address)
        await admin.grant_role(Role.MAINTAINER, handles["maintainer"].address)
        await admin.grant_role(Role.OPERATOR, handles["operator"].address)
        yield Actors(ledger=ledger, **handles)
