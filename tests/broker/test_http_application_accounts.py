"""Read-only application accounts (``app-<name>``) on the HTTP authorization endpoint, as on Mosquitto
(tests/broker/test_least_privilege.py): the account logs in with its own password (never a gateway's),
subscribes to verified topics only, and publishes nothing — no forged verified data, REJECT, HELLO,
command or re-key message. Removing it or changing its password closes its connection. Asked over the
endpoint's HTTP (RabbitMQ's form) as the broker asks it."""

from __future__ import annotations

import pytest

from device_agent.core import topics
from gateway.broker import AuthorizeApplication, BrokerSecret, RemoveApplication
from tests.broker.test_http_authz import DEV, GW_SECRET, _enforcer, _key, _post

APP, APP_SECRET = "app-observer", BrokerSecret("observer-secret-0123456789")
G = "gw-a"

READABLE = [
    topics.every(topics.VERIFIED),
    topics.verified(G, DEV, "telemetry"),
    topics.topic_filter(topics.VERIFIED, G, topics.ANY),
    topics.topic_filter(topics.VERIFIED, topics.ANY, DEV),
]
FORGED = [  # (topic, permission): everything else, reading and writing
    (topics.verified(G, DEV, "telemetry"), "write"),
    (topics.every(topics.VERIFIED), "write"),
    (topics.handshake_down(G, DEV), "write"),  # a forged REJECT
    (topics.handshake_up(G, DEV), "write"),  # a forged HELLO
    (topics.command(G, DEV, "config"), "write"),
    (topics.rekey_down(G, DEV), "write"),
    (topics.data(G, DEV, "telemetry"), "write"),
    (topics.data(G, DEV, "telemetry"), "read"),  # unverified data
    (topics.handshake_up(G, DEV), "read"),
    (topics.handshake_down(G, DEV), "read"),
    (topics.command(G, DEV, "config"), "read"),
    (topics.rekey_up(G, DEV), "read"),
    (f"{topics.PREFIX}/#", "read"),  # wider than verified/#
]


def test_an_application_account_logs_in_with_its_own_password_only() -> None:
    enforcer, _ = _enforcer()
    rules = enforcer.rules
    assert (rules.user(APP, APP_SECRET.reveal(), APP).reason) == "unknown_application"
    enforcer.stage([AuthorizeApplication(name="observer", secret=APP_SECRET)])
    assert rules.user(APP, APP_SECRET.reveal(), APP).allow
    assert rules.user(APP, APP_SECRET.reveal(), None).allow  # EMQX may not send a client id
    assert rules.user(APP, GW_SECRET.reveal(), APP).reason == "bad_password"  # no gateway password
    assert rules.user(APP, APP_SECRET.reveal(), DEV).reason == "client_id"  # cannot kick a device
    assert rules.user("app-other", APP_SECRET.reveal(), "app-other").reason == "unknown_application"
    assert rules.user("app-", APP_SECRET.reveal(), "app-").reason == "unknown_user"
    assert rules.vhost_access(APP, "/").allow
    assert rules.resource(APP, "queue", f"mqtt-subscription-{APP}qos1", "configure").allow
    assert not rules.resource(APP, "queue", "mqtt-subscription-gateway-gw-aqos1", "read").allow
    assert APP_SECRET.reveal() not in repr(rules) + repr(enforcer)


@pytest.mark.parametrize("topic", READABLE)
def test_an_application_reads_verified_topics(topic: str) -> None:
    enforcer, _ = _enforcer()
    enforcer.stage([AuthorizeApplication(name="observer", secret=APP_SECRET)])
    assert enforcer.rules.topic(APP, _key(topic), "read", APP).allow


@pytest.mark.parametrize(("topic", "permission"), FORGED)
def test_an_application_writes_nothing_and_reads_nothing_else(topic: str, permission: str) -> None:
    enforcer, _ = _enforcer()
    enforcer.stage([AuthorizeApplication(name="observer", secret=APP_SECRET)])
    verdict = enforcer.rules.topic(APP, _key(topic), permission, APP)
    assert not verdict.allow, (topic, permission)
    assert verdict.reason == ("read_only" if permission == "write" else "application_rights")


@pytest.mark.asyncio
async def test_the_endpoint_answers_for_application_accounts_and_drops_a_removed_one() -> None:
    enforcer, closer = _enforcer(listen=("127.0.0.1", 0))
    async with enforcer:
        await enforcer.apply([AuthorizeApplication(name="observer", secret=APP_SECRET)])
        port = enforcer.server.port  # type: ignore[union-attr]
        login = f"username={APP}&password={APP_SECRET.reveal()}&client_id={APP}&vhost=%2F"
        assert await _post(port, "/auth/user", login) == (200, b"allow")
        read = f"username={APP}&routing_key={_key(topics.every(topics.VERIFIED))}&permission=read"
        assert await _post(port, "/auth/topic", read + "&resource=topic&name=amq.topic") == (200, b"allow")
        forge = f"username={APP}&routing_key={_key(topics.verified(G, DEV, 'x'))}&permission=write"
        assert await _post(port, "/auth/topic", forge + "&resource=topic&name=amq.topic") == (200, b"deny")
        # a new password closes the connection made with the old one; removal closes it and denies
        renewed = BrokerSecret("a-new-secret-0123456789")
        await enforcer.apply([AuthorizeApplication(name="observer", secret=renewed)])
        assert closer.closed == [APP]
        assert await _post(port, "/auth/user", login) == (200, b"deny")
        await enforcer.apply([RemoveApplication(name="observer")])
        assert closer.closed == [APP, APP]
        assert await _post(port, "/auth/topic", read + "&resource=topic&name=amq.topic") == (200, b"deny")


def test_the_settings_take_application_accounts_with_either_enforcer(tmp_path) -> None:
    from gateway.settings import EnforcementSettings, SettingsError

    password = tmp_path / "observer.password"
    http = EnforcementSettings(mode="http", applications=f"observer={password}")
    assert http.application_files() == {"observer": password}
    with pytest.raises(SettingsError, match="'mosquitto' or 'http'"):
        EnforcementSettings(mode="none", applications=f"observer={password}")
