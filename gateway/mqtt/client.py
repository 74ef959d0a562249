"""A lean asyncio MQTT 3.1.1 client: one object per connection, callbacks for inbound messages.

Why not a library: the gateway's hot path and the simulator's 10,000 connections in one process
both need per-message CPU and per-connection memory that the general clients don't give (see
docs/GATEWAY.md, "MQTT client", for the measured comparison with paho, aiomqtt and gmqtt). This one
is an ``asyncio.Protocol`` over the sans-IO ``codec``: no thread, no per-client task, one timer for
keep-alive, TCP_NODELAY set (QoS 1 round trips otherwise wait ~40 ms on Nagle + delayed ACK).

Errors are this module's: ``MqttConnectError`` (refused, with the broker's reason in words),
``MqttConnectionLost``, ``MqttTimeout``. Reconnecting is the caller's policy (``gateway.service``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from . import codec

log = logging.getLogger("diams.mqtt")

MessageHandler = Callable[[bytes, bytes], None]


class MqttError(Exception):
    """Base of this client's errors."""


class MqttConnectError(MqttError):
    """The broker refused the connection, or it could not be opened."""


class MqttLoginRefused(MqttConnectError):
    """The broker answered the CONNECT with a refusal (bad credentials, not authorized)."""


class MqttConnectionLost(MqttError):
    """The connection closed while something waited on it."""


class MqttTimeout(MqttError):
    """The broker did not answer in time."""


class MqttClient(asyncio.Protocol):
    def __init__(
        self, *, client_id: str, on_message: MessageHandler | None, keepalive: int, max_packet: int
    ) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.keepalive = keepalive
        self._reader = codec.PacketReader(max_packet)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[int] = self._loop.create_future()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.cycle(range(1, 65536))
        self._ping: asyncio.TimerHandle | None = None
        self._pong_due = False
        self._out: list[bytes] | None = None  # packets written this loop turn, sent together
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()
        self.sent = self.received = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed.done() else "open"
        return f"MqttClient({self.client_id!r}, {state})"

    # ---- opening ----
    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        on_message: MessageHandler | None = None,
        keepalive: int = 60,
        timeout: float = 10.0,
        max_packet: int = 1 << 20,
        clean: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> MqttClient:
        """``tls``: MQTT over TLS with this context (it verifies the broker's certificate and name)."""
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cls(
                        client_id=client_id, on_message=on_message, keepalive=keepalive, max_packet=max_packet
                    ),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                timeout,
            )
        except ssl.SSLError as exc:
            raise MqttConnectError(f"TLS with the broker at {host}:{port} failed ({exc.reason})") from None
        except (OSError, TimeoutError) as exc:
            raise MqttConnectError(
                f"cannot reach the broker at {host}:{port} ({type(exc).__name__})"
            ) from None
        assert isinstance(proto, MqttClient)
        proto._write(
            codec.connect(
                client_id.encode(),
                username=None if username is None else username.encode(),
                password=None if password is None else password.encode(),
                keepalive=keepalive,
                clean=clean,
            )
        )
        try:
            rc = await asyncio.wait_for(asyncio.shield(proto._connack), timeout)
        except TimeoutError:
            # nobody waits for this CONNACK any more: cancelled, connection_lost leaves it alone
            # (an exception set on it would be logged as "never retrieved")
            proto._connack.cancel()
            proto.abort()
            raise MqttTimeout(f"no CONNACK from {host}:{port} within {timeout}s") from None
        except MqttConnectionLost:
            raise MqttConnectError(
                f"the broker at {host}:{port} closed the connection during CONNECT"
            ) from None
        if rc:
            proto.abort()
            raise MqttLoginRefused(f"broker refused {client_id!r}: {codec.CONNACK_REASONS.get(rc, rc)}")
        proto._arm_ping()
        return proto

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except codec.MqttProtocolError as exc:
            log.warning("%s: broker sent a malformed packet (%s); closing", self.client_id, exc)
            self.abort()
            return
        for p in packets:
            t = p.type
            if t == codec.PUBLISH:
                self.received += 1
                try:
                    topic, payload, qos, pid = codec.parse_publish(p)
                except codec.MqttProtocolError:
                    self.abort()
                    return
                if qos:
                    self._write(codec.puback(pid))
                if self.on_message is not None:
                    try:
                        self.on_message(topic, payload)
                    except Exception:  # a handler bug must not kill the connection
                        log.exception("%s: message handler failed on %r", self.client_id, topic)
            elif t in (codec.PUBACK, codec.SUBACK, codec.UNSUBACK):
                fut = self._waiting.pop(codec.packet_id_of(p), None)
                if fut is not None and not fut.done():
                    fut.set_result(p.body[2:])
            elif t == codec.CONNACK:
                if not self._connack.done():
                    self._connack.set_result(p.body[1] if len(p.body) == 2 else 255)
            elif t == codec.PINGRESP:
                self._pong_due = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ping is not None:
            self._ping.cancel()
        lost = MqttConnectionLost(f"{self.client_id}: connection lost" + (f" ({exc})" if exc else ""))
        for fut in [self._connack, *self._waiting.values()]:
            if not fut.done():
                fut.set_exception(lost)
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(exc)

    # ---- keep-alive: one timer per connection ----
    def _arm_ping(self) -> None:
        if self.keepalive > 0 and not self.closed.done():
            self._ping = self._loop.call_later(self.keepalive * 0.75, self._on_ping_timer)

    def _on_ping_timer(self) -> None:
        # the transport may be closing (close() or abort() called, connection_lost not yet run): a
        # timer callback must not raise into the event loop
        if self._transport is None or self._transport.is_closing() or self.closed.done():
            return
        if self._pong_due:
            log.warning("%s: no PINGRESP within the keep-alive; closing", self.client_id)
            self.abort()
            return
        self._pong_due = True
        self._write(codec.PINGREQ_BYTES)
        self._arm_ping()

    # ---- operations ----
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self.closed.done()

    def _write(self, data: bytes) -> None:
        # Corking: every packet written during one event-loop turn (the PUBACKs of a read batch, the
        # replies a handler publishes, a commit's CHALLENGEs) leaves in one send() at the end of the
        # turn. One syscall per packet was the largest cost of the gateway's hot path.
        if self._transport is None or self._transport.is_closing():
            raise MqttConnectionLost(f"{self.client_id}: not connected")
        if self._out is None:
            self._out = [data]
            self._loop.call_soon(self._send_out)
        else:
            self._out.append(data)

    def _send_out(self) -> None:
        out, self._out = self._out, None
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def publish(self, topic: str | bytes, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Send without waiting (QoS 1: the broker's PUBACK is not awaited; see ``publish_acked``)."""
        t = topic.encode() if isinstance(topic, str) else topic
        self.sent += 1
        self._write(
            codec.publish(t, payload, qos=qos, packet_id=next(self._ids) if qos else 0, retain=retain)
        )

    async def publish_acked(self, topic: str | bytes, payload: bytes, *, timeout: float = 10.0) -> None:
        """QoS 1 publish; returns when the broker acknowledged it."""
        t = topic.encode() if isinstance(topic, str) else topic
        pid = next(self._ids)
        fut = self._loop.create_future()
        self._waiting[pid] = fut
        self.sent += 1
        self._write(codec.publish(t, payload, qos=1, packet_id=pid))
        await self._wait(fut, timeout, "PUBACK")

    async def subscribe(self, filters: Iterable[tuple[str, int]], *, timeout: float = 10.0) -> list[int]:
        """-> granted QoS per filter (0x80 = refused)."""
        items = [(f.encode(), q) for f, q in filters]
        pid = next(self._ids)
        fut = self._loop.create_future()
        self._waiting[pid] = fut
        self._write(codec.subscribe(pid, items))
        return list(await self._wait(fut, timeout, "SUBACK"))

    async def unsubscribe(self, filters: Iterable[str], *, timeout: float = 10.0) -> None:
        pid = next(self._ids)
        fut = self._loop.create_future()
        self._waiting[pid] = fut
        self._write(codec.unsubscribe(pid, [f.encode() for f in filters]))
        await self._wait(fut, timeout, "UNSUBACK")

    async def _wait(self, fut: asyncio.Future[Any], timeout: float, what: str) -> Any:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: 3.11's swallows a cancel (ledger._run)
                return await fut
        except TimeoutError:
            raise MqttTimeout(f"{self.client_id}: no {what} within {timeout}s") from None

    async def close(self) -> None:
        """Send DISCONNECT and close; idempotent."""
        if self.is_open:
            assert self._transport is not None
            self._send_out()
            self._transport.write(codec.DISCONNECT_BYTES)
            self._transport.close()
        await asyncio.shield(self.closed)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
