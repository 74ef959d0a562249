"""Read-only application accounts on a real 3-node RabbitMQ cluster, decided by the gateways' HTTP
endpoints (``enforcement.applications`` with ``enforcement.mode = "http"``, as on Mosquitto): the
application logs in with its own password on any node, receives verified data, and is refused any
publish (the broker closes the connection) and any subscription outside the verified topics."""

from __future__ import annotations

from typing import Any

import pytest

from device_agent.core import events, topics
from gateway.broker import AuthorizeApplication, BrokerSecret
from gateway.mqtt import MqttClient, MqttConnectError
from tests.cluster.site import ClusterSite, cluster_site
from tests.cluster.test_cluster import _closed, _refused_subscription
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio

APP, SECRET = "app-observer", BrokerSecret("observer-secret-0123456789")


async def _app(s: ClusterSite, node: int, got: list[Any], password: str = SECRET.reveal()) -> MqttClient:
    return await MqttClient.connect(
        "127.0.0.1", s.port_of(node), client_id=APP, username=APP, password=password,
        on_message=lambda t, p: got.append((t, p)), timeout=5,
    )


async def test_an_application_account_reads_verified_data_on_any_node_and_writes_nothing(tmp_path, rabbit):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=1) as s:
        for gw in s.gateways.values():  # every gateway of the cluster lists the same application
            await gw.apply_broker_changes([AuthorizeApplication(name="observer", secret=SECRET)])
        with pytest.raises(MqttConnectError):  # a gateway's password is not the application's
            await _app(s, 0, [], password=s.actors["broker-gw-a"])
        got: list[Any] = []
        app = await _app(s, 2, got)
        await app.subscribe([(topics.every(topics.VERIFIED), 1)])
        dev = s.sim(0, gateway_id="gw-a", node=1)
        await dev.connect()
        assert isinstance(await dev.authenticate(timeout=10), events.Authenticated)
        dev.send_data("telemetry", b"for-the-application")
        assert await eventually(lambda: len(got) == 1, 10), got
        assert got[0][1] == b"for-the-application"
        assert s.refusals("unknown_application") == 0
        # a forged verified message: the broker closes the connection, nothing reaches the listener
        app.publish(topics.verified("gw-a", dev.hex, "telemetry"), b"forged", qos=0)
        assert await _closed(app), "an application account published verified data and stayed connected"
        assert s.refusals("read_only") >= 1
        assert [p for _, p in got] == [b"for-the-application"]
        # outside the verified topics: refused (a device's raw data, its handshakes); one connection at a
        # time, since the client id is the username and a second one would take over the first
        for topic in (topics.topic_filter(topics.DATA, "gw-a", topics.ANY, topics.ANY),
                      topics.topic_filter(topics.HANDSHAKE, "gw-a", topics.ANY, topics.DOWN)):
            other = await _app(s, 0, [])
            assert await _refused_subscription(other, topic), topic
            await other.close()
        assert s.refusals("application_rights") >= 1
        await dev.close()
