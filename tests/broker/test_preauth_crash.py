"""The pre-authentication crash and cut-off bypass of mosquitto < 2.0.21, replayed on the real broker.

The attack (measured on Debian 12's 2.0.11, see FACTS.md): one *refused* anonymous CONNECT reusing a
connected client's id, then the SIGHUP reload the enforcer sends at every enrolment or cut-off. With
the gateway's id the broker then segfaults at the next message routed to the gateway; with a device's
id, removing that device leaves it connected. These tests replay both sequences on the installed
broker and check it survives and cuts off; the enforcer refuses older versions (read at every reload)
and confirms every cut-off in the broker's log, kicking a device the reload left connected.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from firmware_sim.broker import mosquitto_binary
from gateway.broker import (
    BrokerSecret,
    CanaryAnswer,
    ConnectionLog,
    CutOff,
    Enroll,
    UnsafeBroker,
    canary_login,
    check_mosquitto_version,
    gateway_username,
    handshake_down,
    handshake_up,
    parse_mosquitto_version,
)
from tests.broker.clients import Probe
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require

D1 = "00000000000000d1"


def refused_anonymous_connect(host: str, port: int, client_id: str) -> int:
    """The attacker's step: an anonymous CONNECT (refused) that reuses ``client_id``; -> CONNACK code."""
    body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x02]) + struct.pack("!H", 60)
    body += struct.pack("!H", len(client_id)) + client_id.encode()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = sock.recv(4)
    return connack[3]


# ---- the version guard ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("mosquitto version 2.0.11", False),
        ("mosquitto version 2.0.20", False),
        ("mosquitto version 1.6.15", False),
        ("mosquitto version 2.0.21", True),
        ("mosquitto version 2.1.0", True),
        ("mosquitto version 3.0.0", True),
        ("emqx 5.0", False),
        ("", False),
        (None, False),
    ],
)
def test_only_versions_without_the_preauth_crash_are_accepted(text: str | None, safe: bool) -> None:
    if safe:
        assert text is not None and check_mosquitto_version(text) == parse_mosquitto_version(text)
    else:
        with pytest.raises(UnsafeBroker, match=r"install mosquitto >= 2\.0\.21.*bookworm-backports"):
            check_mosquitto_version(text)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_the_enforcer_reads_the_running_brokers_version_at_each_reload() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        await env.enforcer.apply([Enroll(device_id=D1, secret=BrokerSecret.generate())])
        assert env.enforcer.broker_version is not None and env.enforcer.broker_version >= (2, 0, 21)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_the_enforcer_refuses_a_broker_reporting_a_crashable_version() -> None:
    """The seam that reads the version answers 2.0.11 (the real login, the version rewritten)."""
    require(mosquitto_binary() is not None, "mosquitto")

    def old_broker(host: str, port: int, password: str, timeout: float) -> CanaryAnswer:
        answer = canary_login(host, port, password, timeout)
        return CanaryAnswer(answer.accepted, "mosquitto version 2.0.11" if answer.accepted else None)

    async with running_enforced_broker(rights="patterns") as env:
        enforcer = env.enforcer
        enforcer.canary_probe = old_broker
        with pytest.raises(UnsafeBroker, match=r"2\.0\.11 can be crashed.*install mosquitto >= 2\.0\.21"):
            await enforcer.apply([Enroll(device_id=D1, secret=BrokerSecret.generate())])
        with pytest.raises(UnsafeBroker):  # and every later change too
            await enforcer.apply([CutOff(device_id=D1)])


# ---- the two attack sequences on the real broker ----------------------------------------------

@pytest.mark.broker
@pytest.mark.asyncio
async def test_refused_connect_with_the_gateways_id_then_reload_then_traffic_broker_survives() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns") as env:
        b = env.broker
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        gw_user = gateway_username(env.gateway_id)
        gw = Probe(b, gw_user, env.gateway_secret.reveal())
        assert gw.connect() == 0
        gw.subscribe(f"diams/v1/hs/{env.gateway_id}/+/up")
        device = Probe(b, D1, secret.reveal())
        assert device.connect() == 0
        device.subscribe(handshake_down(env.gateway_id, D1))

        assert refused_anonymous_connect(b.host, b.port, gw_user) == 5  # not authorised
        await env.enforcer.apply([Enroll(device_id="00000000000000d2", secret=BrokerSecret.generate())])
        for i in range(20):  # traffic routed to the gateway, and from it
            assert device.publish(handshake_up(env.gateway_id, D1), b"hello %d" % i) == 0
            gw.publish(handshake_down(env.gateway_id, D1), b"answer %d" % i)
        assert len(gw.drain()) == 20 and len(device.drain()) == 20
        assert b.running, "the broker crashed (mosquitto < 2.0.21)"
        assert not gw.disconnected.is_set()
        gw.close()
        device.close()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_refused_connect_with_a_devices_id_then_revoke_device_cut_off_confirmed_and_refused() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    alerts: list[tuple[str, int, bool]] = []
    async with running_enforced_broker(rights="patterns") as env:
        b = env.broker
        env.enforcer.connection_log = log = ConnectionLog(b.log_path)
        env.enforcer.on_unconfirmed = lambda *a: alerts.append(a)
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        device = Probe(b, D1, secret.reveal())
        assert device.connect() == 0
        b.wait_for_log(f"as {D1} (")

        assert refused_anonymous_connect(b.host, b.port, D1) == 5
        b.wait_for_log(f"Client {D1} disconnected, not authorised.")
        log.poll()
        assert log.is_connected(D1), "a refused CONNECT with the device's id must not count as its exit"

        await env.enforcer.apply([CutOff(device_id=D1)])
        assert device.disconnected.wait(5), "the revoked device is still connected (cut-off bypass)"
        assert not log.is_connected(D1) and env.enforcer.confirmed_count == 1
        assert alerts == [] and env.enforcer.kick_count == 0
        again = Probe(b, D1, secret.reveal())
        assert again.connect().is_failure, "the revoked device must be refused on reconnect"
        again.close()
        device.close()
        assert b.running


class _ZombieLog(ConnectionLog):
    """The broker log as 2.0.11 would leave it: the reload does not end ``zombies``' connections; a new
    connection of the same client id (the enforcer's kick) does."""

    def __init__(self, *args: object, zombies: set[str]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.zombies = zombies

    def feed(self, line: str) -> None:
        super().feed(line)
        for z in list(self.zombies):
            if "New client connected from" in line and f" as {z} (" in line and self.armed:
                self.zombies.discard(z)

    armed = False

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.zombies or super().is_connected(device_id)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_revoked_device_left_connected_raises_an_alert_and_is_kicked() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    alerts: list[tuple[str, int, bool]] = []
    async with running_enforced_broker(rights="patterns") as env:
        b = env.broker
        zombie_log = _ZombieLog(b.log_path, zombies=set())
        env.enforcer.connection_log = zombie_log
        env.enforcer.on_unconfirmed = lambda *a: alerts.append(a)
        secret = BrokerSecret.generate()
        await env.enforcer.apply([Enroll(device_id=D1, secret=secret)])
        zombie_log.poll()
        zombie_log.zombies.add(D1)
        zombie_log.armed = True
        started = time.monotonic()
        await env.enforcer.apply([CutOff(device_id=D1)])
        assert alerts == [(D1, 1, True)], "alerted, kicked once, then confirmed"
        assert env.enforcer.kick_count == 1 and env.enforcer.unconfirmed_count == 1
        assert time.monotonic() - started < 10
        device = Probe(b, D1, secret.reveal())
        assert device.connect().is_failure, "the kick credential is removed again: the device stays refused"
        device.close()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_device_the_kick_cannot_remove_is_reported_unconfirmed() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    alerts: list[tuple[str, int, bool]] = []
    async with running_enforced_broker(rights="patterns") as env:
        stuck = _ZombieLog(env.broker.log_path, zombies={D1})  # never armed: kicks do not help
        env.enforcer.connection_log = stuck
        env.enforcer.on_unconfirmed = lambda *a: alerts.append(a)
        env.enforcer.confirm_timeout = 0.05
        env.enforcer.kick_attempts = 2
        await env.enforcer.apply([Enroll(device_id=D1, secret=BrokerSecret.generate())])
        await env.enforcer.apply([CutOff(device_id=D1)])
        assert alerts == [(D1, 2, False)]


def test_connection_log_parses_strict_forms_only(tmp_path: pytest.TempPathFactory) -> None:
    log = ConnectionLog(tmp_path / "none")  # type: ignore[operator]
    log.feed(f"1: New client connected from 127.0.0.1:5 as {D1} (p5, c1, k30, u'{D1}').")
    assert log.is_connected(D1)
    for fake in (
        f"1: Client {D1} disconnected, not authorised.",
        f"1: Client {D1} disconnected due to protocol error.",
        f"1: New client connected from 127.0.0.1:6 as x (p5, c1, k30, u'x'). Client {D1} disconnected.",
    ):
        log.feed(fake)
        assert log.is_connected(D1), fake
    log.feed(f"1: Client {D1} disconnected.")
    assert not log.is_connected(D1)
    log.feed(f"1: New client connected from 127.0.0.1:5 as {D1} (p5, c1, k30, u'{D1}').")
    log.feed("1: mosquitto version 2.0.21 starting")
    assert not log.is_connected(D1)
