"""``HttpEnforcer``: access control for clustered brokers that ask an HTTP service (RabbitMQ, EMQX).

Strategy: nothing is written to the broker. ``apply()`` updates the in-memory ``AccessRules`` that the
gateway's ``AuthzServer`` answers from, so the next question the broker asks (a login, a topic) gets the
new answer, on every node of the cluster, with no reload. Brokers remember what they allowed on a live
connection (RabbitMQ's MQTT plugin caches allowed topics per connection), so every change that takes
rights away from a connected client (CutOff, Demote, a new credential, a removed gateway) also closes
that user's connections wherever they are, through the broker's management API (``ConnectionCloser``:
RabbitMQ's ``DELETE /api/connections/username/{name}``, EMQX's ``DELETE /api/v5/clients/{clientid}``).
``apply()`` returns once those calls are answered; a failed call raises ``ReloadFailed`` (the table is
already changed, so the client is refused at its next login or new topic in any case).

Gateway accounts may live in the broker itself (``accounts``, RabbitMQ's internal users written through
its management API with ``gateway_account_permissions``): with RabbitMQ's ``auth_backends.1 = internal``
the broker then decides a gateway's logins and topics without asking, and only device questions reach
the endpoint. RabbitMQ 3.10 remembers 12 allowed topics per connection, and a gateway replies on one
topic per device: asked over HTTP, nearly every reply would cost a question. The endpoint still knows
the accounts (a fallback while the broker's copy is missing, with the same answers). An account is
written before it may enter the virtual host (user, then topic permissions, then permissions: never a
moment with every topic), and deleted when the gateway is removed.

Grant is also offered synchronously (``stage``): the gateway grants data topics in the same loop turn
that authenticates a device, before the reply that lets the device send data leaves.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp

from ._errors import ReloadFailed, UnknownDevice
from ._http_rights import (
    AccessRules,
    AccountPermissions,
    DeviceRights,
    GatewayAccount,
    gateway_account_permissions,
)
from ._http_server import AuthzServer
from ._interface import (
    AuthorizeApplication,
    AuthorizeGateway,
    BrokerEnforcer,
    Change,
    CutOff,
    Demote,
    Enroll,
    EnrollRekey,
    Grant,
    RemoveApplication,
    RemoveGateway,
)
from ._names import application_username, gateway_username

log = logging.getLogger("diams.gateway.broker.http")
_OTHER_CHANGES = Demote | Grant | AuthorizeGateway | RemoveGateway | AuthorizeApplication | RemoveApplication


class ConnectionCloser(abc.ABC):
    """Closes every live connection of a broker user, cluster-wide."""

    @abc.abstractmethod
    async def close_user(self, username: str) -> None:
        """Return once the broker has closed the user's connections (none is fine)."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release resources."""


class BrokerAccounts(abc.ABC):
    """Accounts kept by the broker itself (RabbitMQ internal users), cluster-wide."""

    @abc.abstractmethod
    async def put_account(self, username: str, password: str, rights: AccountPermissions) -> None:
        """Create or update the account; return once the broker holds it with exactly ``rights``."""

    @abc.abstractmethod
    async def delete_account(self, username: str) -> None:
        """Return once the account is gone (absent is fine)."""


class RabbitManagement(ConnectionCloser, BrokerAccounts):
    """RabbitMQ's management API; ``urls`` of several nodes are tried in turn (a node may be down)."""

    def __init__(
        self, urls: Iterable[str], *, username: str, password: str, timeout: float = 3.0, vhost: str = "/"
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        if not self.urls:
            raise ValueError("RabbitManagement needs at least one management URL")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "X-Reason": "diams: access withdrawn"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._vhost = quote(vhost, safe="")
        self.calls = 0

    def __repr__(self) -> str:  # never the credential
        return f"RabbitManagement({self.urls})"

    async def _call(self, method: str, path: str, what: str, body: dict[str, Any] | None = None) -> None:
        """``method`` ``/api<path>`` on the first node that answers; 404 counts as done for DELETE."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers if body is None else {**self._headers, "content-type": "application/json"}
        ok = (200, 201, 204, 404) if method == "DELETE" else (200, 201, 204)
        last = "no management URL answered"
        for base in self.urls:
            try:
                url = f"{base}/api{path}"
                async with self._session.request(method, url, data=data, headers=headers) as r:
                    self.calls += 1
                    if r.status in ok:
                        return
                    last = f"{base}: HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{base}: {type(exc).__name__}"
        raise ReloadFailed(f"could not {what}: {last}")

    async def close_user(self, username: str) -> None:
        name = quote(username, safe="")
        await self._call("DELETE", f"/connections/username/{name}", f"close the connections of {username}")

    async def put_account(self, username: str, password: str, rights: AccountPermissions) -> None:
        name, what = quote(username, safe=""), f"write the broker account {username}"
        await self._call("PUT", f"/users/{name}", what, {"password": password, "tags": ""})
        topic = {"exchange": "amq.topic", "write": rights.topic_write, "read": rights.topic_read}
        await self._call("PUT", f"/topic-permissions/{self._vhost}/{name}", what, topic)
        regular = {"configure": rights.configure, "write": rights.write, "read": rights.read}
        await self._call("PUT", f"/permissions/{self._vhost}/{name}", what, regular)

    async def delete_account(self, username: str) -> None:
        name = quote(username, safe="")
        await self._call("DELETE", f"/users/{name}", f"delete the broker account {username}")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class HttpEnforcer(BrokerEnforcer):
    """Use as ``async with HttpEnforcer(gateway_id=..., closer=...) as enforcer:``.

    With ``listen`` (host, port) it also serves the decision endpoint (``server.url``); ``peers`` maps
    other gateways' ids to their endpoint URLs (``http://host:port/auth``), for the questions only
    they can answer. ``count(name, label)`` receives every decision (the gateway's metrics).
    """

    def __init__(
        self,
        *,
        gateway_id: str,
        closer: ConnectionCloser | None,
        listen: tuple[str, int] | None = None,
        peers: dict[str, str] | None = None,
        count: Callable[[str, str], None] | None = None,
        shared_listen: tuple[str, int] | None = None,
        accounts: BrokerAccounts | None = None,
    ) -> None:
        self.rules = AccessRules(gateway_id=gateway_id)
        self.closer = closer
        self.accounts = accounts
        self.server = (
            None
            if listen is None
            else AuthzServer(self.rules, host=listen[0], port=listen[1], peers=peers, count=count)
        )
        # several gateways on one host may also listen on one shared port (SO_REUSEPORT): the kernel
        # spreads the broker's connections over the live ones, and a dead one's share moves to the others
        self.shared_server = (
            None
            if shared_listen is None
            else AuthzServer(
                self.rules,
                host=shared_listen[0],
                port=shared_listen[1],
                peers=peers,
                count=count,
                reuse_port=True,
            )
        )
        self.closed_connections = 0

    def __repr__(self) -> str:
        url = None if self.server is None else self.server.url
        return f"HttpEnforcer({self.rules.gateway_id}, endpoint={url}, devices={len(self.rules.devices)})"

    def count_with(self, count: Callable[[str, str], None]) -> None:
        """Count every decision of the endpoint with ``count(name, label)`` (the gateway's metrics)."""
        for server in (self.server, self.shared_server):
            if server is not None:
                server.count = count

    def state_of(self, device_id: str) -> str:
        record = self.rules.devices.get(device_id)
        if record is None:
            return "absent"
        if record.rekey_gateway is not None:
            return "rekeying"
        return "enrolled" if record.streams is None else "granted"

    def stage(self, changes: Iterable[Change]) -> list[str]:
        """Apply ``changes`` to the table at once (all or nothing) -> usernames whose connections to close."""
        batch = list(changes)
        enrolled = set(self.rules.devices)
        rekeying = {d for d, r in self.rules.devices.items() if r.rekey_gateway is not None}
        for change in batch:
            if isinstance(change, Enroll):
                enrolled.add(change.device_id)
                rekeying.discard(change.device_id)
            elif isinstance(change, EnrollRekey):
                enrolled.add(change.device_id)
                rekeying.add(change.device_id)
            elif isinstance(change, CutOff):
                enrolled.discard(change.device_id)
                rekeying.discard(change.device_id)
            elif isinstance(change, Grant) and change.device_id not in enrolled - rekeying:
                raise UnknownDevice(
                    f"cannot grant rights to device {change.device_id}: it is not enrolled for handshakes"
                )
            elif not isinstance(change, _OTHER_CHANGES):
                raise TypeError(f"not a broker change: {type(change).__name__}")
        devices, gateways, applications = self.rules.devices, self.rules.gateways, self.rules.applications
        close: dict[str, None] = {}
        for change in batch:
            if isinstance(change, Enroll):
                password = change.secret.reveal().encode()
                old = devices.get(change.device_id)
                if old is not None and old.password != password:
                    close[change.device_id] = None
                devices[change.device_id] = DeviceRights(password=password)
                if old is not None and old.rekey_gateway is not None:
                    close[change.device_id] = None  # the broker may have cached its re-key topics
            elif isinstance(change, EnrollRekey):
                password = change.secret.reveal().encode()
                old = devices.get(change.device_id)
                if old is not None:  # whatever it had (a session's data topics) ends with the window
                    close[change.device_id] = None
                devices[change.device_id] = DeviceRights(password=password, rekey_gateway=change.gateway_id)
            elif isinstance(change, Grant):
                devices[change.device_id].streams = change.streams
            elif isinstance(change, Demote):
                record = devices.get(change.device_id)
                if record is not None and record.streams is not None:
                    record.streams = None
                    close[change.device_id] = None  # the broker may have cached its data topics
            elif isinstance(change, CutOff):
                if devices.pop(change.device_id, None) is not None:
                    close[change.device_id] = None
            elif isinstance(change, AuthorizeGateway):
                password = change.secret.reveal().encode()
                old_gw = gateways.get(change.gateway_id)
                gid = change.gateway_id
                gateways[gid] = GatewayAccount(password=password, connections=change.connections)
                if old_gw is not None and old_gw.password != password:
                    close.update((gateway_username(gid, n), None) for n in range(old_gw.connections))
            elif isinstance(change, RemoveGateway):
                old_gw = gateways.pop(change.gateway_id, None)
                if old_gw is not None:
                    gid = change.gateway_id
                    close.update((gateway_username(gid, n), None) for n in range(old_gw.connections))
            elif isinstance(change, AuthorizeApplication):
                password = change.secret.reveal().encode()
                if applications.get(change.name, password) != password:
                    close[application_username(change.name)] = None
                applications[change.name] = password
            elif isinstance(change, RemoveApplication):
                if applications.pop(change.name, None) is not None:
                    close[application_username(change.name)] = None
        return list(close)

    async def apply(self, changes: Iterable[Change]) -> None:
        batch = list(changes)
        before = {gid: account.connections for gid, account in self.rules.gateways.items()}
        close = self.stage(batch)
        if self.accounts is not None:
            await self._write_accounts(batch, before)
        await self.close_connections(close)

    async def _write_accounts(self, batch: list[Change], before: dict[str, int]) -> None:
        """The broker's copy of the gateway accounts that ``batch`` changed (``accounts``)."""
        assert self.accounts is not None
        puts: dict[str, str] = {}
        deletes: set[str] = set()
        for change in batch:
            if isinstance(change, AuthorizeGateway):
                gid, n = change.gateway_id, change.connections
                names = [gateway_username(gid, k) for k in range(n)]
                deletes.update(gateway_username(gid, k) for k in range(n, max(n, before.get(gid, 0))))
                deletes.difference_update(names)
                puts.update((name, change.secret.reveal()) for name in names)
            elif isinstance(change, RemoveGateway):
                gid = change.gateway_id
                names = [gateway_username(gid, k) for k in range(before.get(gid, 0))]
                deletes.update(names)
                for name in names:
                    puts.pop(name, None)
        accounts = self.accounts
        results = await asyncio.gather(
            *(accounts.put_account(u, pw, gateway_account_permissions(u)) for u, pw in puts.items()),
            *(accounts.delete_account(u) for u in sorted(deletes)),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            why = str(first) if isinstance(first, ReloadFailed) else type(first).__name__
            raise ReloadFailed(f"{len(failures)} of {len(results)} broker account writes failed; {why}")

    async def close_connections(self, usernames: list[str]) -> None:
        if not usernames or self.closer is None:
            return
        closer = self.closer
        results = await asyncio.gather(*(closer.close_user(u) for u in usernames), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.closed_connections += len(usernames) - len(failures)
        if failures:
            first = failures[0]
            if not isinstance(first, ReloadFailed):
                first = ReloadFailed(f"closing connections failed: {type(first).__name__}")
            raise ReloadFailed(f"{len(failures)} of {len(usernames)} connection closes failed; {first}")

    async def __aenter__(self) -> HttpEnforcer:
        for server in (self.server, self.shared_server):
            if server is not None:
                await server.start()
        return self

    async def aclose(self) -> None:
        for server in (self.shared_server, self.server):
            if server is not None:
                await server.close()
        if self.closer is not None:
            with contextlib.suppress(Exception):
                await self.closer.aclose()
        if isinstance(self.accounts, ConnectionCloser) and self.accounts is not self.closer:
            with contextlib.suppress(Exception):
                await self.accounts.aclose()
