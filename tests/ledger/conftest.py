"""Fixtures for the ledger conformance suite: the same tests on stock eth-tester (py-evm) and on anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from ledger_bridge import EthereumTesterBackend, Ledger, LedgerBackend, Role, RpcBackend, Signer
from ledger_bridge.actor import ActorHandle
from ledger_bridge.anvil import AnvilError, AnvilNode, anvil_binary
from tests.conftest import require

LEDGER_DIR = Path(__file__).resolve().parents[2] / "ledger_bridge"
ETH = 10**18


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil in ledger_bridge/node_modules)")
    try:
        node = AnvilNode().start()
    except AnvilError as exc:
        pytest.fail(str(exc))
    try:
        yield node.url
    finally:
        node.stop()


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
