from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from tests.conftest import require


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    require(mosquitto_binary() is not None, "mosquitto")
    # Open broker: access control is the gateway's job; the username-as-client-id rule is what
    # production uses, so keep it.
    with MosquittoBroker(extra_config=["allow_anonymous true", "use_username_as_clientid true"]) as b:
        yield b
