"""One real 3-node RabbitMQ cluster for the whole module (it takes ~1 min to start on 2 cores).

Every node asks the same endpoint port for its access decisions; the gateways of each test listen on
it (SO_REUSEPORT). In CI a cluster that cannot start is a failure, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_sim.broker import free_port
from firmware_sim.rabbitmq import RabbitCluster, RabbitError, rabbitmq_available
from tests.conftest import require


@pytest.fixture(scope="module")
def rabbit() -> Iterator[tuple[RabbitCluster, int]]:
    require(rabbitmq_available(), "rabbitmq-server")
    shared_port = free_port()
    cluster = RabbitCluster(nodes=3, auth_url=f"http://127.0.0.1:{shared_port}/auth")
    try:
        cluster.start()
    except RabbitError as exc:
        pytest.fail(f"the RabbitMQ cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster, shared_port
    finally:
        cluster.cleanup()
