"""Fixtures: a private Mosquitto broker, and one wired to a MosquittoEnforcer.

Other test packages can build the same from ``firmware_sim.broker.MosquittoBroker`` and
``gateway.broker.MosquittoEnforcer``; see ``enforced_broker`` below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from gateway.broker import (
    AuthorizeGateway,
    BrokerSecret,
    ConnectionLog,
    MosquittoEnforcer,
    Reloader,
    RightsMode,
    mosquitto_config_lines,
)
from tests.conftest import require

GATEWAY_ID = "gw-test"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A plain broker (anonymous access allowed), stopped and removed afterwards."""
    require(mosquitto_binary() is not None, "mosquitto")
    with MosquittoBroker(extra_config=["allow_anonymous true"]) as running:
        yield running


@dataclass
class EnforcedBroker:
    broker: MosquittoBroker
    enforcer: MosquittoEnforcer
    gateway_id: str
    gateway_secret: BrokerSecret


def make_enforced_broker(
    *,
    rights: RightsMode = "per_device",
    min_reload_interval: float = 0.2,
    urgent_reload_interval: float = 0.1,
    reload: Reloader | None = None,
    retain_available: bool = False,
) -> tuple[MosquittoBroker, MosquittoEnforcer]:
    """A broker (not started) whose password and ACL files belong to a new enforcer.

    As in production: retained messages refused, so the enforcer reads the broker's version in its log.
    """
    broker = MosquittoBroker()
    password_file, acl_file = broker.directory / "passwords", broker.directory / "acl"
    broker.extra_config = mosquitto_config_lines(password_file, acl_file, retain_available=retain_available)
    enforcer = MosquittoEnforcer(
        password_file=password_file,
        acl_file=acl_file,
        reload=reload or broker.reload,
        broker_address=(broker.host, broker.port),
        rights=rights,
        min_reload_interval=min_reload_interval,
        urgent_reload_interval=urgent_reload_interval,
        file_group=broker.file_group,
        connection_log=ConnectionLog(broker.log_path),
    )
    return broker, enforcer


@asynccontextmanager
async def running_enforced_broker(**kwargs: Any) -> AsyncIterator[EnforcedBroker]:
    """A running broker enforced by a MosquittoEnforcer, with one gateway account (short intervals)."""
    broker, enforcer = make_enforced_broker(**kwargs)
    secret = BrokerSecret.generate()
    enforcer.stage([AuthorizeGateway(gateway_id=GATEWAY_ID, secret=secret)])
    enforcer.write_files()
    with broker:
        async with enforcer:
            yield EnforcedBroker(broker, enforcer, GATEWAY_ID, secret)


@pytest_asyncio.fixture
async def enforced() -> AsyncIterator[EnforcedBroker]:
    """Rights mode ``per_device``: the broker enforces authentication state and streams."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="per_device") as env:
        yield env


@pytest_asyncio.fixture
async def enforced_patterns() -> AsyncIterator[EnforcedBroker]:
    """Rights mode ``patterns`` (the default): the broker enforces isolation between devices."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        yield env
