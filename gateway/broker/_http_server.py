"""``AuthzServer``: the HTTP endpoint a clustered broker asks, answering from ``AccessRules`` in memory.

Strategy: a small HTTP/1.1 server on a raw asyncio protocol, because the broker asks on every login
and on every new topic of every connection: with a framework's request objects each answer costs
~100 µs of Python, here ~15 µs (one header scan, one form parse, one decision, one pre-built reply).
It speaks what the brokers send: ``POST`` of a urlencoded form (RabbitMQ's ``auth_http``, EMQX with a
form body) or ``GET`` with a query, on paths ending ``/user``, ``/vhost``, ``/resource``, ``/topic``;
it answers ``allow``/``deny`` (RabbitMQ), or ``{"result": "allow"|"deny"}`` when the request accepts
JSON (EMQX). EMQX's ``topic`` (with ``/`` and ``+``) and ``action`` (publish/subscribe) are taken too.

Bounds under floods: requests over ``MAX_REQUEST`` bytes close their connection; at most
``max_connections`` connections (more are closed at once); questions only another gateway can answer
are forwarded to that gateway's endpoint (``peers``) with a timeout, at most ``max_forwards`` at a time,
and never forwarded twice (``x-diams-forwarded``); an unknown or unreachable peer means ``deny``. Every
refusal is counted by reason through ``count`` (the gateway's metrics); nothing is kept per user, so a
flood of unknown names costs nothing but CPU. A malformed request is answered 400 and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from urllib.parse import unquote_plus

import aiohttp

from ._http_rights import AccessRules, Verdict

log = logging.getLogger("diams.gateway.authz")

MAX_REQUEST = 8192
FORWARDED = "x-diams-forwarded"
_QUESTIONS = ("user", "vhost", "resource", "topic")


def parse_form(raw: bytes) -> dict[str, str] | None:
    """A urlencoded form -> {name: value} (the last of repeated names); None when it is not UTF-8 or
    has more than 32 fields. Faster than ``urllib.parse.parse_qsl`` on the common unescaped fields."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    form: dict[str, str] = {}
    fields = text.split("&")
    if len(fields) > 32:
        return None
    for field in fields:
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        if name:
            form[name] = value
    return form


def _reply(status: bytes, body: bytes, ctype: bytes = b"text/plain") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_ALLOW = _reply(b"200 OK", b"allow")
_DENY = _reply(b"200 OK", b"deny")
_ALLOW_JSON = _reply(b"200 OK", b'{"result": "allow"}', b"application/json")
_DENY_JSON = _reply(b"200 OK", b'{"result": "deny"}', b"application/json")
_BAD = _reply(b"400 Bad Request", b"deny")
_NOT_FOUND = _reply(b"404 Not Found", b"deny")

Counter = Callable[[str, str], None]


class AuthzServer:
    """``async with AuthzServer(rules, ...) as server:`` serves on ``server.url`` until closed."""

    def __init__(
        self,
        rules: AccessRules,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        count: Counter | None = None,
        peers: dict[str, str] | None = None,
        forward_timeout: float = 1.0,
        max_forwards: int = 256,
        max_connections: int = 1024,
        reuse_port: bool = False,
    ) -> None:
        self.rules = rules
        self.host, self.port = host, port
        self.count: Counter = count or (lambda name, label: None)
        self.peers = {gid: url.rstrip("/") for gid, url in (peers or {}).items()}
        self.forward_timeout = forward_timeout
        self.max_forwards = max_forwards
        self.max_connections = max_connections
        self.reuse_port = reuse_port
        self.decisions = 0
        self.connections: set[_AuthzProtocol] = set()
        self._forwarding = 0
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None  # made on the first forward

    def __repr__(self) -> str:
        return f"AuthzServer({self.rules.gateway_id}, {self.url})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/auth"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AuthzProtocol(self),
            self.host,
            self.port,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for conn in list(self.connections):
                conn.abort()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AuthzServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- decisions -----------------------------------------------------------------------------------

    def decide(self, question: str, form: dict[str, str]) -> Verdict:
        """This gateway's verdict; ``forward_to`` set when another gateway's endpoint knows better."""
        r = self.rules
        username = form.get("username", "")
        client_id = form.get("client_id") or form.get("clientid") or form.get("variable_map.client_id")
        if question == "user":
            verdict = r.user(username, form.get("password", ""), client_id)
        elif question == "vhost":
            verdict = r.vhost_access(username, form.get("vhost", ""))
        elif question == "resource":
            verdict = r.resource(
                username, form.get("resource", ""), form.get("name", ""), form.get("permission", "")
            )
        else:
            key = form.get("routing_key")
            permission = form.get("permission", "")
            if key is None and "topic" in form:  # EMQX: an MQTT topic and an action
                key = form["topic"].replace("/", ".").replace("+", "*")
                permission = {"publish": "write", "subscribe": "read"}.get(form.get("action", ""), "")
            verdict = r.topic(username, key or "", permission, client_id)
        return verdict

    def settle(self, question: str, verdict: Verdict) -> None:
        self.decisions += 1
        if verdict.allow:
            self.count("authz_allowed", question)
        else:
            self.count("authz_refused", verdict.reason or "denied")

    async def forward(self, question: str, body: bytes, gid: str) -> Verdict:
        """Ask gateway ``gid``'s endpoint; any failure is a refusal."""
        if self._forwarding >= self.max_forwards:
            return Verdict(False, "overload")
        self._forwarding += 1
        try:
            if self._session is None:
                timeout = aiohttp.ClientTimeout(total=self.forward_timeout)
                self._session = aiohttp.ClientSession(timeout=timeout)
            async with self._session.post(
                f"{self.peers[gid]}/{question}",
                data=body,
                headers={"content-type": "application/x-www-form-urlencoded", FORWARDED: "1"},
            ) as response:
                text = (await response.text()).strip()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return Verdict(False, "peer_unreachable")
        finally:
            self._forwarding -= 1
        return Verdict(True) if text == "allow" else Verdict(False, "peer_denied")


class _AuthzProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (a forwarded one holds the rest)."""

    def __init__(self, server: AuthzServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.server.connections) >= self.server.max_connections:
            self.server.count("authz_refused", "overload")
            transport.abort()
            return
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.waiting:
            self._process()

    def _process(self) -> None:
        """Answer every complete request in the buffer (replies written once, in order)."""
        buf, pos = self.buffer, 0
        out: list[bytes] = []
        try:
            while self.transport is not None and not self.waiting:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_REQUEST:
                        pos = len(buf)
                        self._fail(out, _BAD, "bad_request")
                    return
                request = self._parse(buf, pos, end)
                if request is None:
                    pos = len(buf)
                    self._fail(out, _BAD, "bad_request")
                    return
                method, target, headers, length = request
                total = end + 4 + length
                if len(buf) < total:
                    return  # the body is still on its way (length <= MAX_REQUEST)
                body = buf[end + 4 : total]
                pos = total
                path, _, query = target.partition("?")
                question = path.rstrip("/").rsplit("/", 1)[-1]
                json_reply = "application/json" in headers.get("accept", "")
                keep = headers.get("connection", "").lower() != "close"
                if question not in _QUESTIONS:
                    self.server.count("authz_refused", "bad_request")
                    out.append(_NOT_FOUND)
                    if not keep:
                        self._close_after(out)
                    continue
                raw = body if method == "POST" else query.encode("latin-1")
                form = parse_form(raw)
                if form is None:
                    pos = len(buf)
                    self._fail(out, _BAD, "bad_request")
                    return
                verdict = self.server.decide(question, form)
                target_gw = verdict.forward_to
                # a forwarded question is never forwarded again; an unknown peer means the refusal stands
                if target_gw is not None and FORWARDED not in headers and target_gw in self.server.peers:
                    self.waiting = True
                    task = asyncio.ensure_future(self.server.forward(question, raw, target_gw))
                    task.add_done_callback(
                        lambda t, q=question, j=json_reply, k=keep: self._forwarded(t, q, j, k)  # type: ignore[misc]
                    )
                    return
                self.server.settle(question, verdict)
                out.append(self._verdict_bytes(verdict, json_reply))
                if not keep:
                    self._close_after(out)
                    return
        finally:
            self.buffer = buf[pos:] if pos else buf
            if out and self.transport is not None:
                self.transport.write(b"".join(out))

    @staticmethod
    def _parse(buf: bytes, pos: int, end: int) -> tuple[str, str, dict[str, str], int] | None:
        if end - pos > MAX_REQUEST:
            return None
        lines = buf[pos:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] not in ("POST", "GET"):
            return None
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return None
        if not 0 <= length <= MAX_REQUEST:
            return None
        return parts[0], parts[1], headers, length

    def _fail(self, out: list[bytes], reply: bytes, reason: str) -> None:
        self.server.count("authz_refused", reason)
        out.append(reply)
        self._close_after(out)

    def _close_after(self, out: list[bytes]) -> None:
        if self.transport is not None:
            self.transport.write(b"".join(out))
            out.clear()
            self.transport.close()
            self.transport = None

    @staticmethod
    def _verdict_bytes(verdict: Verdict, json_reply: bool) -> bytes:
        if json_reply:
            return _ALLOW_JSON if verdict.allow else _DENY_JSON
        return _ALLOW if verdict.allow else _DENY

    def _forwarded(self, task: asyncio.Future[Verdict], question: str, json_reply: bool, keep: bool) -> None:
        self.waiting = False
        failed = task.cancelled() or task.exception() is not None
        verdict = Verdict(False, "peer_unreachable") if failed else task.result()
        self.server.settle(question, verdict)
        self._write(self._verdict_bytes(verdict, json_reply), keep)
        if self.buffer:
            self._process()

    def _write(self, reply: bytes, keep: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(reply)
        if not keep:
            self.transport.close()
            self.transport = None
