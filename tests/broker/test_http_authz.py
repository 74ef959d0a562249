"""The HTTP authorization endpoint without a broker: the decision table, the server's parsing, bounds,
forwarding between gateways, and the enforcer's changes (a real RabbitMQ cluster is in tests/cluster)."""

from __future__ import annotations

import asyncio
import hmac

import pytest

from device_agent.core import topics
from gateway.broker import (
    AccessRules,
    AuthorizeGateway,
    BrokerSecret,
    ConnectionCloser,
    CutOff,
    Demote,
    Enroll,
    Grant,
    HttpEnforcer,
    RemoveGateway,
    UnknownDevice,
    _http_rights,
)

DEV, OTHER = "0123456789abcdef", "fedcba9876543210"
SECRET, GW_SECRET = BrokerSecret("device-secret-0123456789"), BrokerSecret("gateway-secret-0123456789")


class RecordingCloser(ConnectionCloser):
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def close_user(self, username: str) -> None:
        self.closed.append(username)


def _enforcer(**kw: object) -> tuple[HttpEnforcer, RecordingCloser]:
    closer = RecordingCloser()
    enforcer = HttpEnforcer(gateway_id="gw-a", closer=closer, **kw)  # type: ignore[arg-type]
    enforcer.stage(
        [
            Enroll(device_id=DEV, secret=SECRET),
            Enroll(device_id=OTHER, secret=BrokerSecret("other-secret-0123456789")),
            AuthorizeGateway(gateway_id="gw-a", secret=GW_SECRET, connections=2),
        ]
    )
    return enforcer, closer


def _rules() -> AccessRules:
    return _enforcer()[0].rules


LOGINS = [
    (DEV, SECRET.reveal(), DEV, True, ""),
    (DEV, "wrong-secret-0123456789", DEV, False, "bad_password"),
    (DEV, SECRET.reveal(), OTHER, False, "client_id"),  # taking another's client id would kick it
    ("0000000000000000", SECRET.reveal(), "0000000000000000", False, "unknown_device"),
    ("gateway-gw-a", GW_SECRET.reveal(), "gateway-gw-a", True, ""),
    ("gateway-gw-a.1", GW_SECRET.reveal(), "gateway-gw-a.1", True, ""),
    ("gateway-gw-a.2", GW_SECRET.reveal(), "gateway-gw-a.2", False, "unknown_user"),  # 2 connections
    ("gateway-gw-a", "wrong", "gateway-gw-a", False, "bad_password"),
    ("gateway-gw-b", "anything", "gateway-gw-b", False, "other_gateway"),
    ("guest", "guest", "guest", False, "unknown_user"),
    ("0123456789ABCDEF", SECRET.reveal(), "x", False, "unknown_user"),
]


@pytest.mark.parametrize(("user", "password", "client_id", "allow", "reason"), LOGINS)
def test_logins(user, password, client_id, allow, reason):
    verdict = _rules().user(user, password, client_id)
    assert (verdict.allow, verdict.reason) == (allow, reason)


def test_passwords_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_http_rights.hmac, "compare_digest", spy)
    rules = _rules()
    assert not rules.user(DEV, "wrong-secret-0123456789", DEV).allow
    assert not rules.user("gateway-gw-a", "wrong", "gateway-gw-a").allow
    assert len(calls) == 2


def _key(topic: str) -> str:
    return topic.replace("/", ".").replace("+", "*")


P, HS, D, C, V = topics.PREFIX, topics.HANDSHAKE, topics.DATA, topics.COMMAND, topics.VERIFIED
F = topics.topic_filter
TOPICS = [
    # (user, topic, permission, granted?, allow, reason)
    (DEV, topics.handshake_up("gw-a", DEV), "write", False, True, ""),
    (DEV, topics.handshake_up("gw-z", DEV), "write", False, True, ""),  # any gateway (fail-over)
    (DEV, topics.handshake_down("gw-a", DEV), "read", False, True, ""),
    (DEV, topics.handshake_down("gw-a", DEV), "write", False, False, "not_own_topic"),
    (DEV, topics.handshake_up("gw-a", OTHER), "write", False, False, "not_own_topic"),
    (DEV, topics.data("gw-a", DEV, "telemetry"), "write", False, False, "no_session"),  # before auth
    (DEV, topics.data("gw-a", DEV, "telemetry"), "write", True, True, ""),
    (DEV, topics.data("gw-a", DEV, "video"), "write", True, False, "stream_not_in_policy"),
    (DEV, F(D, "gw-a", DEV), "write", True, False, "not_own_topic"),
    (DEV, f"{P}/{D}/gw-a/{DEV}/tele.metry", "write", True, False, "not_own_topic"),  # splits in two
    (DEV, topics.data("gw-a", DEV, "telemetry"), "read", True, False, "not_own_topic"),
    (DEV, topics.data("gw-b", DEV, "telemetry"), "write", True, False, "other_gateway"),  # gw-b's session
    (DEV, F(C, "gw-a", DEV), "read", False, True, ""),
    (DEV, topics.command("gw-a", DEV, "reboot"), "write", True, False, "not_own_topic"),
    (DEV, topics.every(V), "read", True, False, "not_own_topic"),
    (DEV, "#", "read", True, False, "topic"),
    (DEV, "other/v1/" + topics.handshake_up("gw-a", DEV)[len(P) + 1 :], "write", True, False, "topic"),
    ("gateway-gw-a", F(HS, "gw-a", topics.ANY, topics.UP), "read", False, True, ""),
    ("gateway-gw-a", topics.handshake_down("gw-a", DEV), "write", False, True, ""),
    ("gateway-gw-a", F(D, "gw-a"), "read", False, True, ""),
    ("gateway-gw-a", topics.every(V), "read", False, True, ""),
    ("gateway-gw-a.1", topics.verified("gw-a", DEV, "telemetry"), "write", False, True, ""),
    ("gateway-gw-a", topics.verified("gw-b", DEV, "telemetry"), "write", False, False, "gateway_rights"),
    ("gateway-gw-a", topics.command("gw-a", DEV, "reboot"), "write", False, True, ""),
    ("gateway-gw-a", F(HS, topics.ANY, topics.ANY, topics.UP), "read", False, False, "gateway_rights"),
    ("gateway-gw-a", F(D, "gw-b"), "read", False, False, "gateway_rights"),
    ("gateway-gw-a", topics.every(), "read", False, False, "gateway_rights"),
    ("gateway-gw-a", topics.data("gw-a", DEV, "telemetry"), "write", False, False, "gateway_rights"),
    ("gateway-gw-a", topics.handshake_up("gw-a", DEV), "write", False, False, "gateway_rights"),
    ("gateway-gw-b", F(HS, "gw-b", topics.ANY, topics.UP), "read", False, True, ""),  # rights from the name
    ("nobody", topics.every(V), "read", False, False, "unknown_user"),
]


@pytest.mark.parametrize(("user", "topic", "permission", "granted", "allow", "reason"), TOPICS)
def test_topics(user, topic, permission, granted, allow, reason):
    enforcer, _ = _enforcer()
    if granted:
        enforcer.stage([Grant(device_id=DEV, streams=frozenset({"telemetry", "status"}))])
    verdict = enforcer.rules.topic(user, _key(topic), permission, user)
    assert (verdict.allow, verdict.reason) == (allow, reason)


def test_resources_and_vhost():
    rules = _rules()
    assert rules.vhost_access(DEV, "/").allow and not rules.vhost_access(DEV, "other").allow
    assert rules.resource(DEV, "queue", f"mqtt-subscription-{DEV}qos1", "configure").allow
    assert not rules.resource(DEV, "queue", f"mqtt-subscription-{OTHER}qos1", "read").allow
    assert rules.resource(DEV, "exchange", "amq.topic", "write").allow
    assert not rules.resource(DEV, "exchange", "amq.direct", "write").allow
    assert not rules.resource(DEV, "exchange", "amq.topic", "configure").allow


@pytest.mark.asyncio
async def test_changes_close_connections_that_lose_rights():
    enforcer, closer = _enforcer()
    await enforcer.apply([Grant(device_id=DEV, streams=frozenset({"telemetry"}))])
    assert closer.closed == [] and enforcer.state_of(DEV) == "granted"
    await enforcer.apply([Demote(device_id=DEV)])  # session end: the broker may have cached data topics
    assert closer.closed == [DEV] and enforcer.state_of(DEV) == "enrolled"
    await enforcer.apply([Enroll(device_id=DEV, secret=SECRET)])  # same credential: nothing to close
    await enforcer.apply([Enroll(device_id=DEV, secret=BrokerSecret("a-new-secret-0123456789"))])
    assert closer.closed == [DEV, DEV]
    await enforcer.apply([CutOff(device_id=DEV), CutOff(device_id="1111111111111111")])
    assert closer.closed == [DEV, DEV, DEV] and enforcer.state_of(DEV) == "absent"
    assert not enforcer.rules.user(DEV, "a-new-secret-0123456789", DEV).allow
    await enforcer.apply([RemoveGateway(gateway_id="gw-a")])
    assert closer.closed[-2:] == ["gateway-gw-a", "gateway-gw-a.1"]
    with pytest.raises(UnknownDevice):
        enforcer.stage([CutOff(device_id=OTHER), Grant(device_id=OTHER, streams=frozenset({"x"}))])
    assert enforcer.state_of(OTHER) == "enrolled"  # all or nothing


async def _post(port: int, path: str, body: str, extra: str = "") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = body.encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    reply = await reader.readexactly(length)
    writer.close()
    return status, reply


@pytest.mark.asyncio
async def test_server_answers_counts_refusals_and_survives_garbage():
    counted: list[tuple[str, str]] = []
    enforcer, _ = _enforcer(listen=("127.0.0.1", 0), count=lambda n, r: counted.append((n, r)))
    async with enforcer:
        port = enforcer.server.port  # type: ignore[union-attr]
        form = f"username={DEV}&password={SECRET.reveal()}&client_id={DEV}&vhost=%2F"
        assert await _post(port, "/auth/user", form) == (200, b"allow")
        assert await _post(port, "/auth/user", form.replace("device", "xevice")) == (200, b"deny")
        topic = f"username={DEV}&routing_key=diams.v1.d.gw-a.{DEV}.telemetry&permission=write&resource=topic"
        assert await _post(port, "/auth/topic", topic) == (200, b"deny")
        # EMQX: MQTT topic and action, JSON answer
        emqx = f"username={DEV}&topic={topics.handshake_up('gw-a', DEV)}&action=publish"
        assert await _post(port, "/auth/topic", emqx, "Accept: application/json\r\n") == (
            200,
            b'{"result": "allow"}',
        )
        assert (await _post(port, "/auth/nothing", "a=b"))[0] == 404
        # garbage and oversized requests close their connection; the server keeps serving
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"X" * 20_000)
        await writer.drain()
        assert b"400" in await reader.read(100)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /auth/user HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        assert b"400" in await reader.read(100)
        writer.close()
        # keep-alive and pipelining: answers come back in order on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        one = form.encode()
        request = b"POST /auth/user HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
        bad = b"username=x&password=y"
        request_bad = b"POST /auth/user HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(bad), bad)
        writer.write(request + request_bad + request)
        replies = [await reader.readuntil(b"allow") for _ in range(1)]
        rest = await reader.readuntil(b"deny")
        last = await reader.readuntil(b"allow")
        assert replies and rest and last
        writer.close()
        assert await _post(port, "/auth/user", form) == (200, b"allow")
    assert ("authz_refused", "bad_password") in counted and ("authz_refused", "no_session") in counted
    assert ("authz_refused", "bad_request") in counted and ("authz_allowed", "user") in counted
    shown = repr(enforcer) + repr(enforcer.rules) + repr(enforcer.server)
    shown += repr(enforcer.rules.devices) + repr(enforcer.rules.gateways)
    assert SECRET.reveal() not in shown and GW_SECRET.reveal() not in shown


@pytest.mark.asyncio
async def test_connection_flood_is_bounded():
    enforcer, _ = _enforcer(listen=("127.0.0.1", 0))
    enforcer.server.max_connections = 5  # type: ignore[union-attr]
    async with enforcer:
        port = enforcer.server.port  # type: ignore[union-attr]
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read(10) == b""  # the sixth is closed at once
        writer.close()
        assert len(enforcer.server.connections) == 5  # type: ignore[union-attr]
        for _, w in held:
            w.close()


@pytest.mark.asyncio
async def test_questions_about_another_gateway_are_forwarded_to_it_and_refused_when_it_is_gone():
    b_rules_enforcer = HttpEnforcer(gateway_id="gw-b", closer=None, listen=("127.0.0.1", 0))
    b_rules_enforcer.stage(
        [
            Enroll(device_id=DEV, secret=SECRET),
            AuthorizeGateway(gateway_id="gw-b", secret=GW_SECRET),
            Grant(device_id=DEV, streams=frozenset({"telemetry"})),
        ]
    )
    async with b_rules_enforcer:
        b_url = b_rules_enforcer.server.url  # type: ignore[union-attr]
        a, _ = _enforcer(listen=("127.0.0.1", 0), peers={"gw-b": b_url})
        async with a:
            port = a.server.port  # type: ignore[union-attr]
            data_b = f"username={DEV}&routing_key=diams.v1.d.gw-b.{DEV}.telemetry&permission=write"
            assert await _post(port, "/auth/topic", data_b) == (200, b"allow")  # gw-b holds the session
            login_b = f"username=gateway-gw-b&password={GW_SECRET.reveal()}&client_id=gateway-gw-b"
            assert await _post(port, "/auth/user", login_b) == (200, b"allow")
            assert await _post(port, "/auth/user", login_b.replace("gateway-secret", "x")) == (200, b"deny")
            # a forwarded question is answered where it lands, never forwarded again
            data_c = f"username={DEV}&routing_key=diams.v1.d.gw-c.{DEV}.telemetry&permission=write"
            assert await _post(port, "/auth/topic", data_c) == (200, b"deny")
            await b_rules_enforcer.aclose()
            assert await _post(port, "/auth/topic", data_b) == (200, b"deny")  # gw-b is gone
