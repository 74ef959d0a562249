"""The lean MQTT client against a real Mosquitto: QoS 0/1 both ways, refusals, loss, TCP_NODELAY."""

import asyncio
import socket

import pytest

from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from gateway.mqtt import MqttClient, MqttConnectError, MqttConnectionLost
from tests.conftest import require


@pytest.fixture
def broker():
    require(mosquitto_binary() is not None, "mosquitto")
    with MosquittoBroker(extra_config=["allow_anonymous true", "set_tcp_nodelay true"]) as b:
        yield b


@pytest.mark.asyncio
async def test_publish_subscribe_qos0_and_qos1(broker):
    got = []
    done = asyncio.Event()

    def on_message(topic, payload):
        got.append((topic, payload))
        if len(got) == 200:
            done.set()

    sub = await MqttClient.connect("127.0.0.1", broker.port, client_id="sub", on_message=on_message)
    assert await sub.subscribe([("diams/test/#", 1)]) == [1]
    pub = await MqttClient.connect("127.0.0.1", broker.port, client_id="pub")
    sock = pub._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    for i in range(100):
        pub.publish(f"diams/test/{i}", b"q0-%d" % i)
        await pub.publish_acked(f"diams/test/{i}", b"q1-%d" % i)
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(p for _, p in got) == sorted(
        [b"q0-%d" % i for i in range(100)] + [b"q1-%d" % i for i in range(100)]
    )
    await pub.close()
    await sub.close()
    assert not sub.is_open


@pytest.mark.asyncio
async def test_refused_login_is_an_error_in_words(tmp_path):
    require(mosquitto_binary() is not None, "mosquitto")
    with MosquittoBroker(extra_config=["allow_anonymous false"]) as b:
        with pytest.raises(MqttConnectError, match=r"not authorized|bad user name"):
            await MqttClient.connect("127.0.0.1", b.port, client_id="x")
    with pytest.raises(MqttConnectError, match="cannot reach"):
        await MqttClient.connect("127.0.0.1", b.port, client_id="x", timeout=2)


@pytest.mark.asyncio
async def test_broker_going_away_resolves_closed_and_fails_waiters(broker):
    c = await MqttClient.connect("127.0.0.1", broker.port, client_id="c")
    broker.kill()
    exc = await asyncio.wait_for(asyncio.shield(c.closed), 5)
    assert not c.is_open and (exc is None or isinstance(exc, Exception))
    with pytest.raises(MqttConnectionLost):
        c.publish("t", b"x")
