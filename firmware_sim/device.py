"""One simulated device: the real protocol core (device role) over the lean asyncio MQTT client.

It behaves as the firmware would: the core's agent policy (``device_agent.core.policy``, the same as
the paho and MicroPython agents') picks the epoch and the counter of each HELLO (counters only grow;
an epoch hint is tried at the next attempt and committed only after a success) and learns each
outcome; the device authenticates with one gateway at a time, sends MAC'd data, and verifies
commands. Scenarios decide *when* a device tries (``authenticate()``), so the policy's backoff is
theirs to honour or skip. Misbehaviours for attack scenarios are explicit methods (replaying a captured
message, using a cloned identity, lying about its firmware).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from device_agent.core import events, policy, topics, wire
from device_agent.core.device import DeviceRole
from device_agent.core.keys import gateway_key
from gateway.mqtt import MqttClient, MqttLoginRefused
from ledger_bridge.enrollment import ProvisionedDevice


@dataclass
class DeviceStats:
    handshakes: int = 0
    authenticated: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)
    commands_refused: int = 0
    no_session_signals: int = 0  # "no session" REJECTs from the gateway (it restarted)


_TIMED_OUT = object()


def _expire(outcome: asyncio.Future[object]) -> None:
    if not outcome.done():
        outcome.set_result(_TIMED_OUT)


class SimDevice:
    def __init__(
        self,
        identity: ProvisionedDevice,
        *,
        gateway_id: str,
        host: str,
        port: int,
        epoch: int = 0,
        counter: int = 0,
        firmware_hash: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.identity = identity
        self.tls = tls  # MQTT over TLS with this context (verifies the broker), else plain TCP
        self.device_id = identity.device_id
        self.hex = self.device_id.hex()
        self.gateway_id = gateway_id
        self.host, self.port = host, port
        # The counter "flash" of a simulated board: the policy's SAVE actions land here.
        self.flash = policy.format_counters(epoch, {(gateway_id, epoch): counter})
        self.policy = policy.AgentPolicy([gateway_id], os.urandom, state=self.flash, epoch=epoch,
                                         answer_timeout=1e9)  # authenticate(timeout=...) times out
        self.firmware_hash = firmware_hash or identity.firmware_hash
        self._clock = clock
        self.client: MqttClient | None = None
        self.role: DeviceRole | None = None
        self.session = None
        self.stats = DeviceStats()
        self.sent_messages: list[bytes] = []  # what an eavesdropper on the up topic would capture
        self.hellos: list[tuple[int, int]] = []  # (epoch, counter) of every HELLO this device sent
        self._outcome: asyncio.Future[object] | None = None
        self._started = 0.0
        self._cached_key: tuple[tuple[str, int, bytes], bytes] | None = None
        self._pending: tuple[str, int, int] | None = None  # a HELLO the policy started on its own

    def __repr__(self) -> str:
        return f"SimDevice({self.hex} -> {self.gateway_id})"

    @property
    def epoch(self) -> int:
        """The committed epoch (the highest one a handshake succeeded under, or the configured one)."""
        return int(self.policy.epoch)

    @property
    def counter(self) -> int:
        """The last counter used with this gateway under the committed epoch."""
        key = (self.gateway_id, self.policy.epoch)
        return int(self.policy.next.get(key, self.policy.reserved.get(key, -1) + 1)) - 1

    @counter.setter
    def counter(self, value: int) -> None:  # attack scenarios and tests craft HELLOs by hand
        key = (self.gateway_id, self.policy.epoch)
        self.policy.next[key] = value + 1
        self.policy.reserved[key] = max(self.policy.reserved.get(key, -1), value)

    @property
    def up(self) -> str:
        return str(topics.handshake_up(self.gateway_id, self.hex))

    @property
    def down(self) -> str:
        return str(topics.handshake_down(self.gateway_id, self.hex))

    async def connect(self, *, timeout: float = 10.0) -> None:
        """Log in with P of the policy's login epoch; a refused login tries the next epochs at once
        while the policy's probe lasts (PROTOCOL.md 3.4), then raises ``MqttLoginRefused``."""
        while True:
            try:
                self.client = await MqttClient.connect(
                    self.host,
                    self.port,
                    client_id=self.hex,
                    username=self.hex,
                    password=self.identity.broker_password(int(self.policy.login_epoch)),
                    on_message=self._on_message,
                    keepalive=120,
                    timeout=timeout,
                    tls=self.tls,
                )
                break
            except MqttLoginRefused:
                actions = self.policy.login_refused(self._clock())
                if not any(a[0] == policy.CONNECT for a in actions):
                    raise
        commands = topics.topic_filter(topics.COMMAND, self.gateway_id, self.hex)
        await self.client.subscribe([(self.down, 1), (commands, 1)])

    def _key(self, epoch: int | None = None) -> bytes:
        # K_dg changes only with the epoch or the firmware; an HKDF per handshake was measurable
        # when one process simulates 1,000 devices re-authenticating in a loop.
        epoch = self.epoch if epoch is None else epoch
        which = (self.gateway_id, epoch, self.firmware_hash)
        if self._cached_key is None or self._cached_key[0] != which:
            secret, gid = self.identity.secret, self.gateway_id.encode()
            key = bytes(gateway_key(secret, self.device_id, gid, epoch, self.firmware_hash))
            self._cached_key = (which, key)
        return self._cached_key[1]

    async def authenticate(self, *, timeout: float = 5.0) -> object:
        """One handshake; -> the final event (Authenticated, or Rejected with a reason)."""
        assert self.client is not None
        now = self._clock()
        _, epoch, counter = self._next_hello(now)
        self.role = DeviceRole(self.device_id, self.gateway_id.encode(), self._key(epoch), epoch)
        hello = self.role.hello(counter, os.urandom(8))
        self.hellos.append((epoch, counter))
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        self._started = self._clock()
        self.stats.handshakes += 1
        self._send(self.up, hello)
        # One timer instead of wait_for(shield(...)): that pair costs two extra tasks per handshake.
        timer = loop.call_later(timeout, _expire, self._outcome)
        try:
            result = await self._outcome
        finally:
            timer.cancel()
            self._outcome = None
        if result is _TIMED_OUT:
            result = self.role.timeout()
        now = self._clock()
        if isinstance(result, events.Authenticated):
            self.session = result.session
            self.stats.authenticated += 1
            self.stats.latencies_ms.append((now - self._started) * 1000)
            self._learn(self.policy.authenticated(self.gateway_id, result.session.expires, now))
        else:
            reason = getattr(result, "reason", "unexpected")
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
            # an epoch hint is retried at once by the policy: that HELLO is the next authenticate()'s
            self._learn(self.policy.rejected(self.gateway_id, reason, getattr(result, "epoch", None), now))
        return result

    def no_session(self) -> bool:
        """The gateway says it holds no session for this device -> True when the policy wants a new
        handshake now (the caller then awaits ``authenticate()``); a forged or repeated signal -> False."""
        return self._learn(self.policy.no_session(self.gateway_id, self._clock()))

    def _learn(self, actions: list[tuple[object, ...]]) -> bool:
        """Apply the policy's actions; a HELLO it started waits for the next ``authenticate()``."""
        hello = self._apply(actions)
        if hello is not None:
            self._pending = hello
        return hello is not None

    def _next_hello(self, now: float) -> tuple[str, int, int]:
        """The policy's next HELLO (gateway, epoch, counter), now: the scenario decides when to try."""
        pending, self._pending = self._pending, None
        if pending is not None:  # started by no_session()
            return pending
        p = self.policy
        actions = p.reauth(now) if p.online else p.connected(now)
        hello = self._apply(actions)
        if hello is None:  # a retry the policy planned for later (backoff): the scenario wants it now
            wake = p.wake_at()
            hello = self._apply(p.tick(now if wake is None else max(now, wake)))
        assert hello is not None, "the policy started no handshake"
        return hello

    def _apply(self, actions: list[tuple[object, ...]]) -> tuple[str, int, int] | None:
        hello = None
        for a in actions:
            if a[0] == policy.SAVE:
                self.flash = str(a[1])
            elif a[0] == policy.HELLO:
                hello = (str(a[1]), int(a[2]), int(a[3]))  # type: ignore[call-overload]
            elif a[0] == policy.END_SESSION:
                self.session = None
        return hello

    def _send(self, topic: str, payload: bytes) -> None:
        assert self.client is not None
        self.sent_messages.append(payload)
        self.client.publish(topic, payload, qos=1)

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        t = topic.decode()
        if t == self.down:
            if wire.no_session_signal(payload):  # the gateway lost our session: the policy decides
                self.stats.no_session_signals += 1
                self.no_session()  # the session is gone; the next authenticate() sends the HELLO
                return
            if self.role is None:
                return
            reply, event = self.role.receive(payload, self._clock())
            if reply is not None:
                self._send(self.up, reply)
            if (
                not isinstance(event, events.Ignored)
                and self._outcome is not None
                and not self._outcome.done()
            ):
                self._outcome.set_result(event)
        elif self.session is not None:
            parsed = topics.parse(t)
            if parsed is None or parsed[0] != topics.COMMAND:
                return
            data, reason = self.session.open(parsed[3].encode(), payload, self._clock())
            if reason is None:
                assert data is not None
                self.stats.commands.append(data)
            else:
                self.stats.commands_refused += 1

    def send_data(self, stream: str, payload: bytes) -> None:
        """Publish MAC'd data on the device's own data topic (needs a session)."""
        assert self.session is not None and self.client is not None
        self.client.publish(
            topics.data(self.gateway_id, self.hex, stream),
            self.session.seal(stream.encode(), payload),
            qos=1,
        )

    def replay(self, topic: str, payload: bytes) -> None:
        """Attack helper: publish captured bytes as they were."""
        assert self.client is not None
        self.client.publish(topic, payload, qos=1)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
