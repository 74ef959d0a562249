"""The paho-mqtt adapter: moves bytes between the broker and ``AgentDriver``, nothing more.

Strategy: one thread. ``run()`` calls ``client.loop(timeout)`` itself (never ``loop_start``), so
paho's callbacks run on this thread and only queue what they saw; the driver is then fed from the
same thread, with no locks around the protocol state. Reconnection is ours, not paho's: after a
drop or a refused login the core's agent policy schedules the next dial after a full-jitter
backoff (a long one after a refused login), so a fleet does not reconnect in waves after a broker
restart. TCP_NODELAY is set on every
socket paho opens (paho never does; without it a request/response over QoS 1 costs ~44 ms to Nagle
+ delayed ACK).
Other threads talk to the agent through ``publish()``, ``snapshot()`` and ``stop()``, all thread-safe
(the driver is only touched under one lock; paho's publish wakes its own loop).
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .config import AgentConfig
from .counters import CounterFile
from .driver import AgentDriver, Publish
from .keystore import DeviceSecret
from .rekey import RekeyResponder

__all__ = ["AgentStatus", "MqttAgent"]

_IDLE_WAKE_S = 1.0

log = logging.getLogger("diams.agent")


@dataclass(frozen=True, kw_only=True)
class AgentStatus:
    connected: bool
    gateway: str | None
    epoch: int
    connects: int
    stats: dict[str, int]


class MqttAgent:
    def __init__(
        self,
        config: AgentConfig,
        secret: DeviceSecret,
        *,
        on_command: Callable[[str, bytes], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_status: Callable[[MqttAgent], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.counters = CounterFile(config.state_file)
        # Reconnects start from a wider window than handshake retries: after a broker restart the whole
        # fleet loses its connection at the same instant, and U(0, reconnect_base_s) spreads it out.
        self.driver = AgentDriver(
            device_id=config.device_id_bytes, secret=secret, firmware_hash=config.firmware_hash,
            counters=self.counters, gateways=tuple(config.gateways), epoch=config.epoch,
            answer_timeout=config.answer_timeout_s, reauth_margin=config.reauth_margin_s,
            backoff_base=config.backoff_base_s, backoff_cap=config.backoff_cap_s,
            reconnect_base=config.reconnect_base_s, block=config.counter_block, on_command=on_command,
            rekey=RekeyResponder(config.key_file, config.device_id_bytes), on_rekey=self._rekeyed,
        )
        # A refused login (revoked, suspended, not enrolled) will not clear in seconds: once its epoch
        # probe is over, the core's policy makes the next dial wait its long backoff (login_refused).
        self.refusals = 0  # refused logins in a row (after the epoch probe)
        self.broker_refused = False
        self.last_refusal: tuple[str, str | None, str, float] | None = None  # (by, gateway, reason, clock)
        self._last_publish: tuple[str, float] | None = None
        self._on_status = on_status
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = False
        self.connects = 0
        self._refused_link = False  # the link is being closed after a refused CONNACK
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.device_id,
                                   protocol=paho.MQTTv311)
        if config.broker_tls_ca is not None:  # verifies the broker's certificate and host name
            self._client.tls_set_context(ssl.create_default_context(cafile=str(config.broker_tls_ca)))
        self._client.on_socket_open = self._on_socket_open
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def _rekeyed(self, secret: DeviceSecret) -> None:
        """S' is committed: the next logins use the broker password derived from it (3.4); the driver
        holds S' now and ``_dial`` derives P from it."""

    def __repr__(self) -> str:
        return f"MqttAgent({self.config.device_id} @ {self.config.broker_host}:{self.config.broker_port})"

    # -- thread-safe API -------------------------------------------------------------------------

    def publish(self, stream: str, payload: bytes) -> bool:
        """Send authenticated DATA on ``stream``; False (and counted) while there is no live session.

        paho's publish is thread-safe and wakes its loop, so this goes out at once from any thread."""
        with self._lock:
            sealed = self.driver.seal(stream, bytes(payload), self._clock())
        if sealed is None:
            log.warning("data on %s not sent: no live session (%s)", stream,
                        "the broker refuses the login" if self.broker_refused else "not authenticated")
            return False
        self._send([sealed])
        self._last_publish = (stream, self._clock())
        return True

    def stop(self) -> None:
        """Ask ``run()`` to return (within a loop turn; a DISCONNECT wakes it at once when connected)."""
        self._stop.set()
        if self._connected:
            try:
                self._client.disconnect()
            except (OSError, ValueError):
                pass

    def snapshot(self) -> AgentStatus:
        with self._lock:
            return AgentStatus(connected=self._connected, gateway=self.driver.session_gateway,
                               epoch=self.driver.epoch, connects=self.connects,
                               stats=self.driver.all_stats())

    # -- paho callbacks (run inside client.loop(), on the agent's thread) ------------------------

    @staticmethod
    def _on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # e.g. a unix socket, or websockets
            pass

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._inbox.put(("connect", (not reason.is_failure, str(reason))))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._inbox.put(("disconnect", None))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.put(("message", (msg.topic, bytes(msg.payload))))

    # -- the loop --------------------------------------------------------------------------------

    def _send(self, publishes: list[Publish]) -> None:
        for p in publishes:
            self._client.publish(p.topic, p.payload, qos=1)

    def _dial(self) -> bool:
        with self._lock:
            self._client.username_pw_set(self.config.device_id, self.driver.broker_password())
        try:
            self._client.connect(self.config.broker_host, self.config.broker_port,
                                 keepalive=self.config.keepalive_s)
            return True
        except OSError as exc:
            log.warning("broker %s:%d unreachable: %s", self.config.broker_host, self.config.broker_port,
                        exc.strerror or type(exc).__name__)
            return False

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _handle(self, kind: str, value: Any) -> None:
        now = self._clock()
        if kind == "connect":
            if not value[0]:
                self._refused_link = True
                with self._lock:
                    tried = self.driver.login_epoch
                    self.driver.login_refused(now)
                    probe = self.driver.connect_due
                if probe:  # P of a later epoch is tried at once (the device may have missed a bump)
                    log.info("broker %s:%d refused the login under epoch %d (%s): trying epoch %d",
                             self.config.broker_host, self.config.broker_port, tried, value[1],
                             self.driver.login_epoch)
                    return
                with self._lock:
                    deadline = self.driver.next_deadline()
                delay = 0.0 if deadline is None else max(0.0, deadline - now)
                self.refusals += 1
                self.broker_refused = True
                self.last_refusal = ("broker", None, value[1], now)
                log.error("broker %s:%d refused the login (%s): this device may be revoked or suspended on "
                          "the ledger, or not enrolled at the broker yet (the gateway removes a device's "
                          "account when it may no longer connect); next try in %.0f s (long backoff while "
                          "refused)", self.config.broker_host, self.config.broker_port, value[1], delay)
                return
            self.broker_refused = False
            self.refusals = 0
            with self._lock:
                self._connected = True
                self.connects += 1
            for topic in self.driver.subscriptions():
                self._client.subscribe(topic, qos=1)
            with self._lock:
                out = self.driver.connected(now)
            self._send(out)
        elif kind == "disconnect":
            with self._lock:
                self._connected = False
                if not self._refused_link:  # the refused login was told to the policy already: one
                    self.driver.disconnected(now)  # event, or it would count as one more failed dial
        elif kind == "message":
            topic, payload = value
            with self._lock:
                out = self.driver.message(topic, payload, now)
            self._send(out)

    def _streams_due(self, now: float, due: dict[str, float]) -> None:
        """Publish the streams whose time has come; ``due`` is updated with their next times."""
        if not self.driver.authenticated:
            return
        for s in self.config.streams:
            if s.source is None or now < due.get(s.name, 0.0):
                continue
            due[s.name] = now + s.interval_s
            try:
                data = s.source.read_bytes()[:16384]
            except OSError as exc:
                log.warning("stream %s: cannot read %s: %s", s.name, s.source, exc.strerror)
                continue
            self.publish(s.name, data.strip())

    def _status(self) -> None:
        if self._on_status is not None:
            self._on_status(self)

    def _wait_refused(self, seconds: float) -> None:
        self._wait(seconds)

    def _say_lost(self, rc: Any, was_connected: bool, delay: float) -> None:
        gateway = self.driver.session_gateway
        if was_connected and self._last_publish and self._clock() - self._last_publish[1] < 1.0:
            # Mosquitto drops a client whose publish its ACL refuses, without a word.
            self.driver.stats["data_refused_suspected"] += 1
            log.warning("connection dropped right after DATA on %r: the broker may have refused it "
                        "(a stream the device's policy does not allow?)", self._last_publish[0])
        kept = f"; session with {gateway} kept until it ends or the gateway drops it" if gateway else ""
        log.warning("connection to the broker lost (%s)%s; reconnecting in %.2f s", paho.error_string(rc),
                    kept, delay)

    def run(self) -> None:
        """Connect, authenticate and serve until ``stop()``; reconnects with jittered backoff."""
        due: dict[str, float] = {}
        linked = False
        with self._lock:
            self.driver.start(self._clock())
        try:
            while not self._stop.is_set():
                if not linked:
                    now = self._clock()
                    with self._lock:
                        self.driver.tick(now)
                        due_now, deadline = self.driver.connect_due, self.driver.next_deadline()
                        self.driver.connect_due = False
                    if not due_now:
                        wait = _IDLE_WAKE_S if deadline is None else max(0.0, deadline - now)
                        if self.broker_refused:  # the policy's long backoff after a refused login
                            self._status()
                            self._wait_refused(wait)
                        else:
                            self._wait(wait)
                        continue
                    linked = self._dial()
                    if not linked:
                        with self._lock:
                            self.driver.disconnected(self._clock())
                        continue
                now = self._clock()
                with self._lock:
                    deadline = self.driver.next_deadline()
                times = [t for t in [deadline, *due.values()] if t is not None]
                # Idle agents wake at most once a second: a fleet of them in one process must not
                # spin (publishes from other threads wake paho's loop by themselves).
                timeout = min(_IDLE_WAKE_S, max(0.0, min(times) - now)) if times else _IDLE_WAKE_S
                rc = self._client.loop(timeout=timeout)
                while True:
                    try:
                        kind, value = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    self._handle(kind, value)
                if rc != paho.MQTT_ERR_SUCCESS:
                    now = self._clock()
                    with self._lock:
                        was_connected = self._connected
                        self._connected = False
                        refused, self._refused_link = self._refused_link, False
                        if not refused:  # a refused login was told to the policy already
                            self.driver.disconnected(now)
                        deadline = self.driver.next_deadline()
                    linked = False
                    if self._stop.is_set():
                        break
                    if not refused and not self.broker_refused:
                        wait = 0.0 if deadline is None else max(0.0, deadline - now)
                        self._say_lost(rc, was_connected, wait)
                    self._status()
                    continue
                now = self._clock()
                with self._lock:
                    out = self.driver.tick(now)
                self._send(out)
                self._streams_due(now, due)
                self._status()
        finally:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.1)  # writes the DISCONNECT; paho then closes its socket
            except (OSError, ValueError):
                pass
            # paho closes its connection and its internal wake-up socket pair only in __del__, which the
            # GC may run after the sockets' own finalizers (a ResourceWarning, and a leak until then).
            self._client._reset_sockets()
            with self._lock:
                self._connected = False
