"""A stand-in gateway for agent tests: the core's GatewayRole behind paho, on the protocol topics.

It is what the gateway daemon will do on the wire (answer handshakes on G's handshake up topics,
verify DATA on G's data topics with the session's MAC, send sealed COMMANDs) and nothing else: no
ledger, no broker enforcement. Tests that use it can later take the real daemon instead.
``silent=True`` makes a gateway that listens and never answers (for failover tests).
Like the daemon, it answers DATA that comes without a session with the no-session REJECT (at most once a
second per device); ``forget()`` drops a session, as a gateway restart would.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.core import keys, topics, wire
from device_agent.core.events import Authenticated
from device_agent.core.gateway import DeviceEntry, GatewayRole


def entry_for(
    secret: bytes, device_id: bytes, gateway_id: str, fw: bytes, *, epoch: int = 0, lifetime: int = 3600
) -> DeviceEntry:
    k_dg = keys.gateway_key(secret, device_id, gateway_id.encode(), epoch, fw)
    return DeviceEntry(device_id, k_dg, epoch, lifetime=lifetime)


class Responder:
    def __init__(
        self,
        host: str,
        port: int,
        gateway_id: str,
        entries: dict[bytes, DeviceEntry] | None = None,
        *,
        silent: bool = False,
        tls_ca: Path | None = None,
    ) -> None:
        """``tls_ca``: MQTT over TLS, the broker's certificate verified against this CA file."""
        self.gateway_id = gateway_id
        self.entries = dict(entries or {})
        self.silent = silent
        self.role = GatewayRole(gateway_id.encode(), self.entries.get, os.urandom, proof_timeout=5.0)
        self.sessions: dict[bytes, Any] = {}
        self.verified: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        self.data_refused: list[str] = []
        self.hellos = 0
        self.no_session_signals = 0
        self._signalled: dict[bytes, float] = {}
        self.authentications = 0
        self.events: list[Any] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._host, self._port = host, port
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"responder-{gateway_id}-{os.getpid()}"
        )
        self.client.username_pw_set(f"responder-{gateway_id}")
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(  # type: ignore[attr-defined]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def __enter__(self) -> Responder:
        self.client.connect(self._host, self._port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("responder did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho leaves its socket pair to __del__ (device_agent/agent/mqtt.py)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(
            [(topics.topic_filter(topics.HANDSHAKE, self.gateway_id, topics.ANY, topics.UP), 1),
             (topics.topic_filter(topics.DATA, self.gateway_id), 1)]
        )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None:
            return
        parts = ("", "", *parsed)  # kind, gateway, device, last at the topic's own level numbers
        now = time.monotonic()
        with self._lock:
            if parts[2] == topics.HANDSHAKE:
                did = bytes.fromhex(parts[4])
                if msg.payload[:1] == b"\x11":
                    self.hellos += 1
                if self.silent:
                    return
                reply, events = self.role.receive(did, bytes(msg.payload), now)
                self.events.extend(events)
                for ev in events:
                    if isinstance(ev, Authenticated):
                        self.sessions[did] = ev.session
                        self.authentications += 1
                if reply is not None:
                    client.publish(topics.handshake_down(self.gateway_id, parts[4]), reply, qos=1)
            elif parts[2] == topics.DATA:
                did = bytes.fromhex(parts[4])
                session = self.sessions.get(did)
                if session is None:
                    if did in self.entries and now - self._signalled.get(did, -1e9) >= 1.0:
                        self._signalled[did] = now
                        self.no_session_signals += 1
                        signal = wire.encode(wire.REJECT, wire.NO_SESSION, 0)
                        client.publish(topics.handshake_down(self.gateway_id, parts[4]), signal, qos=1)
                    return
                payload, reason = session.open(parts[5].encode(), bytes(msg.payload), now)
                if payload is None:
                    self.data_refused.append(str(reason))
                else:
                    self.verified.put((parts[4], parts[5], bytes(payload)))

    def forget(self, device_hex: str) -> None:
        """Drop the device's session, as a gateway restart does: its data now get the no-session signal."""
        with self._lock:
            self.sessions.pop(bytes.fromhex(device_hex), None)

    def send_command(self, device_hex: str, name: str, payload: bytes) -> None:
        with self._lock:
            message = self.sessions[bytes.fromhex(device_hex)].seal(name.encode(), payload)
        topic = topics.command(self.gateway_id, device_hex, name)
        self.client.publish(topic, message, qos=1).wait_for_publish(5)

    def send_raw_command(self, device_hex: str, name: str, message: bytes) -> None:
        topic = topics.command(self.gateway_id, device_hex, name)
        self.client.publish(topic, message, qos=1).wait_for_publish(5)

    def next_verified(self, timeout: float = 5.0) -> tuple[str, str, bytes]:
        return self.verified.get(timeout=timeout)
