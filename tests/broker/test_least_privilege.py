"""Least privilege at the broker, on the real Mosquitto: the gateway level of a device's topics accepts
only registered gateway ids (before, any `+` level did: a device could park messages under made-up
gateway ids); applications have read-only accounts of their own (before, the observer used a gateway
account that could forge verified data and REJECTs); no client can retain a message; sockets that never
send CONNECT are closed."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from device_agent.core import topics
from firmware_sim.broker import mosquitto_binary
from gateway.broker import (
    COMMAND,
    DATA,
    HANDSHAKE,
    VERIFIED,
    AuthorizeApplication,
    BrokerSecret,
    ConnectionLog,
    Enroll,
    InvalidIdentifier,
    RemoveApplication,
    UnsafeBroker,
    application_username,
    command_topic,
    data_topic,
    every,
    gateway_username,
    handshake_down,
    handshake_up,
    mosquitto_config_lines,
    verified_topic,
)
from tests.broker.clients import Probe
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require

D1 = "00000000000000d1"
NOT_AUTHORIZED = 135
NO_SUBSCRIBERS = 16  # accepted, nobody listening


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_device_reaches_only_registered_gateways_topics() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        device = Probe(env.broker, D1, secret.reveal())
        assert device.connect() == 0
        assert device.publish(handshake_up(env.gateway_id, D1), b"hello").value == NO_SUBSCRIBERS
        assert device.publish(str(topics.data(env.gateway_id, D1, "temp")), b"d").value == NO_SUBSCRIBERS
        for made_up in ("gw-nobody", "x"):
            assert device.publish(handshake_up(made_up, D1), b"park").value == NOT_AUTHORIZED
            assert device.publish(str(topics.data(made_up, D1, "temp")), b"park").value == NOT_AUTHORIZED
        device.close()


def test_the_broker_config_bounds_queued_bytes(tmp_path) -> None:
    lines = mosquitto_config_lines(tmp_path / "p", tmp_path / "a")
    assert any(line.startswith("max_queued_bytes ") and int(line.split()[1]) > 0 for line in lines)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_an_application_account_reads_verified_data_and_can_write_nothing() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        gw_id, app_secret, dev_secret = env.gateway_id, BrokerSecret.generate(), BrokerSecret.generate()
        await env.enforcer.apply(
            [AuthorizeApplication(name="dash", secret=app_secret), Enroll(device_id=D1, secret=dev_secret)]
        )
        app = Probe(env.broker, application_username("dash"), app_secret.reveal())
        assert app.connect() == 0
        app.subscribe(every(VERIFIED), every(HANDSHAKE), every(DATA), every(COMMAND))
        gateway = Probe(env.broker, gateway_username(gw_id), env.gateway_secret.reveal())
        assert gateway.connect() == 0
        device = Probe(env.broker, D1, dev_secret.reveal())
        assert device.connect() == 0

        assert gateway.publish(verified_topic(gw_id, D1, "temp"), b"21.5") == 0
        assert not device.publish(handshake_up(gw_id, D1), b"hello").is_failure  # the app must not see it
        assert device.publish(data_topic(gw_id, D1, "temp"), b"raw") == 0  # the gateway's ACL reads data
        gateway.publish(handshake_down(gw_id, D1), b"answer")
        gateway.publish(command_topic(gw_id, D1, "reboot"), b"c")
        got = app.drain(0.5)
        assert [(m.topic, m.payload) for m in got] == [(verified_topic(gw_id, D1, "temp"), b"21.5")]

        forged = [
            verified_topic(gw_id, D1, "temp"),  # vouch for data in a gateway's name
            handshake_down(gw_id, D1),  # forge a REJECT to a device
            handshake_up(gw_id, D1),
            # the `%u` patterns give it nothing either (its name where a device id goes: no builder takes it)
            "/".join((topics.PREFIX, HANDSHAKE, gw_id, "app-dash", topics.UP)),
            "/".join((topics.PREFIX, topics.REKEY, gw_id, "app-dash", topics.UP)),
            data_topic(gw_id, D1, "temp"),
            command_topic(gw_id, D1, "reboot"),
        ]
        for topic in forged:
            assert app.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
        # its own secret: the gateway's password does not open the application's account, nor the reverse
        for username, password in ((application_username("dash"), env.gateway_secret.reveal()),
                                   (gateway_username(gw_id), app_secret.reveal())):
            wrong = Probe(env.broker, username, password)
            assert wrong.connect().is_failure
            wrong.close()

        await env.enforcer.apply([RemoveApplication(name="dash")])
        assert app.disconnected.wait(5), "a removed application account is dropped"
        for probe in (app, gateway, device):
            probe.close()


def test_application_names_are_checked() -> None:
    for bad in ("", "Dash", "a/b", "+", "#", "x" * 33, "a b"):
        with pytest.raises(InvalidIdentifier):
            AuthorizeApplication(name=bad, secret=BrokerSecret.generate())
    with pytest.raises(TypeError):
        AuthorizeApplication(name="dash", secret="a-plain-string-password")  # type: ignore[arg-type]
    assert "secret" not in repr(AuthorizeApplication(name="dash", secret=BrokerSecret.generate()))


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_device_that_publishes_a_retained_message_is_disconnected_and_nothing_is_kept() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        assert env.enforcer.broker_version is not None  # still checked: read from the broker's log
        device = Probe(env.broker, D1, secret.reveal())
        assert device.connect() == 0
        topic = handshake_up(env.gateway_id, D1)
        device.client.publish(topic, b"parked" * 1000, qos=1, retain=True)
        assert device.disconnected.wait(5), "a retained publish must end the device's connection"
        device.close()
        gateway = Probe(env.broker, gateway_username(env.gateway_id), env.gateway_secret.reveal())
        assert gateway.connect() == 0
        gateway.subscribe(topic)
        assert gateway.drain(0.5) == [], "the broker kept a retained message"
        gateway.close()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_the_broker_keeps_retained_messages_unless_configured_not_to() -> None:
    """The control for the test above: the same publish on a broker with retain_available."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns", retain_available=True) as env:
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        device = Probe(env.broker, D1, secret.reveal())
        assert device.connect() == 0
        topic = handshake_up(env.gateway_id, D1)
        info = device.client.publish(topic, b"parked", qos=1, retain=True)
        info.wait_for_publish(5)
        assert not device.disconnected.wait(0.3)
        device.close()
        gateway = Probe(env.broker, gateway_username(env.gateway_id), env.gateway_secret.reveal())
        assert gateway.connect() == 0
        gateway.subscribe(topic)
        assert [m.payload for m in gateway.drain(0.5)] == [b"parked"]
        gateway.close()


PRE_CONNECT_TIMEOUT_S = 90  # mosquitto 2.0.21: a socket gets a 60 s keepalive (x 1.5) until CONNECT; fixed


@pytest.mark.broker
def test_idle_sockets_that_never_send_connect_are_closed(broker) -> None:
    """Measured, not configurable: mosquitto 2.0.21 closes a socket that has not completed a CONNECT
    ~90 s after it opened, also when it trickles bytes of a CONNECT meanwhile (slowloris)."""
    silent = socket.create_connection((broker.host, broker.port))
    trickle = socket.create_connection((broker.host, broker.port))
    partial = b"\x10\x7f\x00\x04MQTT\x04\x02\x00\x3c" + b"\x00" * 100
    started = time.monotonic()
    closed: dict[str, float] = {}
    sent = 0
    for sock in (silent, trickle):
        sock.setblocking(False)
    while len(closed) < 2 and time.monotonic() - started < PRE_CONNECT_TIMEOUT_S + 20:
        if "trickle" not in closed and time.monotonic() - started > sent * 10:
            with contextlib.suppress(OSError):
                trickle.send(partial[sent : sent + 1])
            sent += 1
        for name, sock in (("silent", silent), ("trickle", trickle)):
            if name in closed:
                continue
            try:
                if sock.recv(16) == b"":
                    closed[name] = time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                closed[name] = time.monotonic() - started
        time.sleep(0.2)
    silent.close()
    trickle.close()
    assert set(closed) == {"silent", "trickle"}, f"still open after {PRE_CONNECT_TIMEOUT_S + 20} s"
    assert all(PRE_CONNECT_TIMEOUT_S - 5 < t < PRE_CONNECT_TIMEOUT_S + 20 for t in closed.values()), closed


@pytest.mark.broker
@pytest.mark.asyncio
async def test_without_retain_the_version_guard_needs_the_broker_log() -> None:
    """``retain_available false`` hides the retained $SYS/broker/version: with no log to read it from,
    the enforcer refuses to go on (it never enforces on a broker of unknown version)."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        env.enforcer.connection_log = None
        with pytest.raises(UnsafeBroker, match="broker_log"):
            await env.enforcer.apply([Enroll(device_id=D1, secret=BrokerSecret.generate())])


def test_the_connection_log_keeps_the_version_of_the_last_start(tmp_path) -> None:
    log = ConnectionLog(tmp_path / "none")
    assert log.version is None
    log.feed("1: mosquitto version 2.0.11 starting")
    log.feed("1: mosquitto version 2.0.11 running")
    log.feed(f"1: New client connected from 127.0.0.1:5 as {D1} (p5, c1, k30, u'{D1}').")
    log.feed("1: mosquitto version 2.0.21 starting")
    assert log.version == "mosquitto version 2.0.21" and not log.is_connected(D1)
    log.feed("1: Client mosquitto version 9.9.9 running disconnected.")  # client text never counts
    assert log.version == "mosquitto version 2.0.21"
