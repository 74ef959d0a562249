"""A gateway account as a RabbitMQ internal user: its permissions (regular expressions, which RabbitMQ
matches with PCRE) say exactly what the endpoint's ``AccessRules`` answers for the same account, and the
enforcer writes, updates and deletes the broker's copy (a real cluster in ``test_cluster.py``)."""

from __future__ import annotations

import itertools
import re

import pytest

from device_agent.core import topics
from gateway.broker import (
    AccessRules,
    AccountPermissions,
    AuthorizeGateway,
    BrokerAccounts,
    BrokerSecret,
    HttpEnforcer,
    ReloadFailed,
    RemoveGateway,
    gateway_account_permissions,
)

DEV = "0123456789abcdef"
USERS = ("gateway-gw-a", "gateway-gw-a.1", "gateway-b2")

# routing keys as RabbitMQ hands them over: "/" -> ".", "+" -> "*"; right and wrong shapes, each level
LEVELS = {
    "kind": [topics.HANDSHAKE, topics.DATA, topics.COMMAND, topics.VERIFIED, topics.REKEY, "x", "*", "#"],
    "gateway": ["gw-a", "gw-b", "b2", "*", "#", "gw-a\n"],
    "device": [DEV, "*", "#", "a.b", ""],
    "last": [topics.UP, topics.DOWN, "telemetry", "*", "#", "up\n", "x y", None],
}


def _keys() -> list[str]:
    out = ["#", "diams.v1", "diams.v1.#", "diams.v1.v", "diams.v1.v.#", "diams.v1.v.gw-a.#.x", "other.v1.v.#"]
    for kind, gw, dev, last in itertools.product(*LEVELS.values()):
        levels = ["diams", "v1", kind, gw, dev] + ([] if last is None else [last])
        out.append(".".join(levels))
    return out


def _regex_allows(pattern: str, key: str) -> bool:
    return re.search(pattern, key) is not None  # RabbitMQ: re:run(Key, Pattern) (search, not match)


@pytest.mark.parametrize("user", USERS)
def test_the_broker_permissions_allow_exactly_what_the_endpoint_allows(user):
    rules = AccessRules(gateway_id="gw-a")
    rights = gateway_account_permissions(user)
    checked = 0
    for key in _keys():
        for permission, pattern in (("write", rights.topic_write), ("read", rights.topic_read)):
            want = rules.topic(user, key, permission, user).allow
            assert _regex_allows(pattern, key) == want, (user, key, permission)
            checked += want
    assert checked >= 20  # the table above reaches the allowed shapes too


def test_the_broker_permissions_on_queues_and_exchanges():
    rules = AccessRules(gateway_id="gw-a")
    user = "gateway-gw-a.1"
    rights = gateway_account_permissions(user)
    names = [
        ("exchange", "amq.topic"),
        ("exchange", "amq.direct"),
        ("queue", f"mqtt-subscription-{user}qos0"),
        ("queue", f"mqtt-subscription-{user}qos1"),
        ("queue", f"mqtt-subscription-{user}qos1\n"),
        ("queue", "mqtt-subscription-gateway-gw-aqos1"),
        ("queue", f"mqtt-subscription-{DEV}qos1"),
    ]
    for (kind, name), permission in itertools.product(names, ("write", "read")):
        want = rules.resource(user, kind, name, permission).allow
        assert _regex_allows(getattr(rights, permission), name) == want, (name, permission)
    # configure: the account's own queues only (the exchange exists already)
    assert _regex_allows(rights.configure, f"mqtt-subscription-{user}qos1")
    assert not _regex_allows(rights.configure, "amq.topic")
    assert not _regex_allows(rights.configure, f"mqtt-subscription-{DEV}qos1")


def test_no_braces_in_the_patterns():
    # RabbitMQ expands {username}, {vhost}, {client_id} in topic permissions: none may appear by accident
    rights = gateway_account_permissions("gateway-gw-a")
    for pattern in (rights.topic_write, rights.topic_read, rights.configure, rights.write, rights.read):
        assert "{" not in pattern and "}" not in pattern
    with pytest.raises(ValueError):
        gateway_account_permissions(DEV)


class RecordingAccounts(BrokerAccounts):
    def __init__(self, fail: bool = False) -> None:
        self.accounts: dict[str, tuple[str, AccountPermissions]] = {}
        self.fail = fail

    async def put_account(self, username: str, password: str, rights: AccountPermissions) -> None:
        if self.fail:
            raise ReloadFailed("management API down")
        self.accounts[username] = (password, rights)

    async def delete_account(self, username: str) -> None:
        if self.fail:
            raise ReloadFailed("management API down")
        self.accounts.pop(username, None)


@pytest.mark.asyncio
async def test_the_enforcer_keeps_the_broker_accounts_with_the_gateway_changes():
    accounts = RecordingAccounts()
    enforcer = HttpEnforcer(gateway_id="gw-a", closer=None, accounts=accounts)
    secret = BrokerSecret("gateway-secret-0123456789")
    await enforcer.apply([AuthorizeGateway(gateway_id="gw-a", secret=secret, connections=3)])
    assert sorted(accounts.accounts) == ["gateway-gw-a", "gateway-gw-a.1", "gateway-gw-a.2"]
    rights = gateway_account_permissions("gateway-gw-a.2")
    assert accounts.accounts["gateway-gw-a.2"] == (secret.reveal(), rights)
    # fewer connections: the extra account goes; a new secret reaches every remaining account
    new = BrokerSecret("another-secret-0123456789")
    await enforcer.apply([AuthorizeGateway(gateway_id="gw-a", secret=new, connections=2)])
    assert {u: pw for u, (pw, _) in accounts.accounts.items()} == {
        "gateway-gw-a": new.reveal(),
        "gateway-gw-a.1": new.reveal(),
    }
    await enforcer.apply([RemoveGateway(gateway_id="gw-a")])
    assert accounts.accounts == {}


@pytest.mark.asyncio
async def test_a_failed_account_write_is_an_error_not_silence():
    enforcer = HttpEnforcer(gateway_id="gw-a", closer=None, accounts=RecordingAccounts(fail=True))
    with pytest.raises(ReloadFailed, match="broker account"):
        await enforcer.apply([AuthorizeGateway(gateway_id="gw-a", secret=BrokerSecret.generate())])
    # the endpoint still knows the account: the broker asks it while its own copy is missing
    assert "gw-a" in enforcer.rules.gateways


@pytest.mark.asyncio
async def test_rabbit_management_writes_topic_rights_before_the_vhost_right():
    """Against a recording HTTP server: the order of the calls is what keeps an account from ever
    existing with every topic (RabbitMQ allows every topic to a user without topic permissions)."""
    from aiohttp import web

    from gateway.broker import RabbitManagement

    seen: list[tuple[str, str, dict[str, object] | None]] = []
    status = {"DELETE": 404, "PUT": 201}

    async def record(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.raw_path, body))
        return web.Response(status=status[request.method])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    dead = "http://127.0.0.1:1"  # a node that is down: the next URL is tried
    management = RabbitManagement([dead, f"http://127.0.0.1:{port}"], username="admin", password="pw-admin")
    try:
        rights = gateway_account_permissions("gateway-gw-a.1")
        await management.put_account("gateway-gw-a.1", "pw-gateway-0123456789", rights)
        assert [(m, path) for m, path, _ in seen] == [
            ("PUT", "/api/users/gateway-gw-a.1"),
            ("PUT", "/api/topic-permissions/%2F/gateway-gw-a.1"),
            ("PUT", "/api/permissions/%2F/gateway-gw-a.1"),
        ]
        assert seen[0][2] == {"password": "pw-gateway-0123456789", "tags": ""}
        assert seen[1][2] == {"exchange": "amq.topic", "write": rights.topic_write, "read": rights.topic_read}
        await management.delete_account("gateway-gw-a.1")  # 404: already gone is fine
        assert seen[-1][:2] == ("DELETE", "/api/users/gateway-gw-a.1")
        status["PUT"] = 500
        with pytest.raises(ReloadFailed, match="HTTP 500") as failed:
            await management.put_account("gateway-gw-a.1", "pw-gateway-0123456789", rights)
        assert "pw-" not in str(failed.value) and "pw-" not in repr(management)
    finally:
        await management.aclose()
        await runner.cleanup()
