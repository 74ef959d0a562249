"""The agent's logic, without I/O: which handshake to start, where to send what, when to retry.

Strategy: the driver is fed events by an adapter (``connected``, ``disconnected``, ``message``,
``tick``) and returns the MQTT publishes to make; the clock is an argument of every call. It owns
one ``DeviceRole`` per attempt (never reused) and the current ``Session``; a new session replaces
the old one only when its handshake completes, so data keeps flowing during a re-authentication.

* Counters come from ``CounterStore.next_counter`` (durable before the HELLO is returned).
* Epochs (PROTOCOL.md section 5): a ``stale_epoch`` REJECT whose hint is higher than the epoch tried
  is retried at once under the hinted epoch, which is committed only when that handshake succeeds.
  Any other failure forgets the trial epoch, so a forged hint costs one attempt and nothing more.
* Failover: no answer within ``answer_timeout`` (or a REJECT) moves to the next gateway
  (``GatewayRotation``); a full failed round waits a jittered backoff.
* Re-authentication: ``reauth_margin`` before the session's end, or on a verified ``reauth`` COMMAND.
* Commands: verified with the session; forged, replayed or expired ones are dropped and counted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from device_agent.core.events import Authenticated, Rejected

from . import _core
from .counters import CounterStore
from .failover import GatewayRotation
from .keystore import DeviceSecret
from .reasons import explain

__all__ = ["AgentDriver", "Publish", "command_topic", "data_topic", "hs_down_topic", "hs_up_topic"]

log = logging.getLogger("diams.agent")

REAUTH_COMMAND = "reauth"


class Publish(NamedTuple):
    topic: str
    payload: bytes


# Topics, PROTOCOL.md section 6.
def hs_up_topic(gateway: str, device: str) -> str:
    return f"diams/v1/hs/{gateway}/{device}/up"


def hs_down_topic(gateway: str, device: str) -> str:
    return f"diams/v1/hs/{gateway}/{device}/down"


def data_topic(gateway: str, device: str, stream: str) -> str:
    return f"diams/v1/d/{gateway}/{device}/{stream}"


def command_topic(gateway: str, device: str, name: str) -> str:
    return f"diams/v1/c/{gateway}/{device}/{name}"


class _Attempt:
    __slots__ = ("counter", "deadline", "epoch", "gateway", "role")

    def __init__(self, gateway: str, epoch: int, counter: int, role: Any, deadline: float) -> None:
        self.gateway = gateway
        self.epoch = epoch
        self.counter = counter
        self.role = role
        self.deadline = deadline


class AgentDriver:
    def __init__(
        self,
        *,
        device_id: bytes,
        secret: DeviceSecret,
        firmware_hash: bytes,
        counters: CounterStore,
        rotation: GatewayRotation,
        answer_timeout: float = 5.0,
        reauth_margin: float = 60.0,
        random: Callable[[int], bytes] = os.urandom,
        on_command: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.device_hex = device_id.hex()
        self._secret = secret
        self._fw = firmware_hash
        self.counters = counters
        self.rotation = rotation
        self.answer_timeout = answer_timeout
        self.reauth_margin = reauth_margin
        self._random = random
        self._on_command = on_command
        self.stats: Counter[str] = Counter()
        self.online = False
        self.session: Any = None
        self.session_gateway: str | None = None
        self._attempt: _Attempt | None = None
        self._trial_epoch: int | None = None
        self._start_at: float | None = 0.0  # when to start the next handshake; None: none planned
        self._reauth_at: float | None = None
        self.last_refusal: tuple[str, str, float] | None = None  # (gateway, reason, clock)

    def __repr__(self) -> str:
        return (f"AgentDriver({self.device_hex}, online={self.online}, "
                f"gateway={self.session_gateway}, attempt={self._attempt is not None})")

    # -- what the adapter asks -------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        subs = [hs_down_topic(g, self.device_hex) for g in self.rotation.gateways]
        return [*subs, command_topic("+", self.device_hex, "+")]

    @property
    def authenticated(self) -> bool:
        return self.session is not None

    def next_deadline(self) -> float | None:
        times = [t for t in (self._start_at, self._reauth_at) if t is not None]
        if self._attempt is not None:
            times.append(self._attempt.deadline)
        return min(times) if times else None

    # -- events from the adapter -----------------------------------------------------------------

    def connected(self, now: float) -> list[Publish]:
        self.online = True
        if self.session is None and self._start_at is None:
            self._start_at = now
        return self.tick(now)

    def disconnected(self) -> None:
        """The broker link dropped: an attempt in flight is abandoned (its reply cannot arrive)."""
        self.online = False
        if self._attempt is not None:
            self._attempt = None
            self._start_at = 0.0  # at once, when back online

    def tick(self, now: float) -> list[Publish]:
        out: list[Publish] = []
        a = self._attempt
        if a is not None and now >= a.deadline:
            a.role.timeout()
            self._failed("timeout", now)
        if self.session is not None and now >= self.session.expires:
            log.info("session with %s expired", self.session_gateway)
            self.session = None
            self.session_gateway = None
            if self._start_at is None and self._attempt is None:
                self._start_at = now
        if self._reauth_at is not None and now >= self._reauth_at:
            self._reauth_at = None
            if self._attempt is None and self._start_at is None:
                self._start_at = now
        if self.online and self._attempt is None and self._start_at is not None and now >= self._start_at:
            self._start_at = None
            out.append(self._hello(now))
        return out

    def message(self, topic: str, payload: bytes, now: float) -> list[Publish]:
        parts = topic.split("/")
        if len(parts) == 6 and parts[2] == "hs" and parts[4] == self.device_hex and parts[5] == "down":
            return self._handshake_message(parts[3], payload, now)
        if (len(parts) == 6 and parts[2] == "c" and parts[4] == self.device_hex
                and parts[3] == self.session_gateway):
            self._command(parts[5], payload, now)
            return self.tick(now)
        self.stats["stray_messages"] += 1
        return []

    def seal(self, stream: str, payload: bytes, now: float) -> Publish | None:
        """Authenticated DATA for ``stream``, or None while there is no live session."""
        if self.session is None or now >= self.session.expires:
            self.stats["data_unsent"] += 1
            return None
        self.stats["data_sent"] += 1
        assert self.session_gateway is not None
        return Publish(data_topic(self.session_gateway, self.device_hex, stream),
                       self.session.seal(stream.encode(), payload))

    def request_reauth(self, now: float) -> list[Publish]:
        if self._attempt is None and self._start_at is None:
            self._start_at = now
        return self.tick(now)

    # -- internals -------------------------------------------------------------------------------

    def _hello(self, now: float) -> Publish:
        gateway = self.rotation.current
        epoch = self._trial_epoch if self._trial_epoch is not None else self.counters.epoch
        gw = gateway.encode()
        k_dg = _core.gateway_key(self._secret.reveal(), self.device_id, gw, epoch, self._fw)
        role = _core.device_role(self.device_id, gw, k_dg, epoch)
        counter = self.counters.next_counter(gateway, epoch)  # durable before the HELLO leaves
        hello = role.hello(counter, self._random(8))
        self._attempt = _Attempt(gateway, epoch, counter, role, now + self.answer_timeout)
        self.stats["hellos"] += 1
        log.info("HELLO to %s (epoch %d, counter %d)", gateway, epoch, counter)
        return Publish(hs_up_topic(gateway, self.device_hex), hello)

    def _handshake_message(self, gateway: str, payload: bytes, now: float) -> list[Publish]:
        a = self._attempt
        if a is None or gateway != a.gateway:
            self.stats["stray_messages"] += 1
            return self.tick(now)
        reply, event = a.role.receive(payload, now)
        out = [Publish(hs_up_topic(gateway, self.device_hex), reply)] if reply is not None else []
        if isinstance(event, Authenticated):
            self._attempt = None
            self.session = event.session
            self.session_gateway = gateway
            self.counters.commit_epoch(a.epoch)
            self._trial_epoch = None
            self.rotation.succeeded()
            lifetime = self.session.expires - now
            self._reauth_at = self.session.expires - min(self.reauth_margin, lifetime / 2)
            self.stats["authenticated"] += 1
            log.info("authenticated with %s (epoch %d), session for %.0f s", gateway, a.epoch, lifetime)
        elif isinstance(event, Rejected):
            if event.reason == "stale_epoch" and event.epoch > a.epoch:
                log.info("%s hints epoch %d (tried %d): retrying under it", gateway, event.epoch, a.epoch)
                self._attempt = None
                self._trial_epoch = event.epoch
                self._start_at = now
                self.stats["epoch_hints"] += 1
            else:
                self._failed(event.reason, now)
        return out + self.tick(now)

    def _failed(self, reason: str, now: float) -> None:
        a = self._attempt
        hinted = self._trial_epoch is not None
        self._attempt = None
        self._trial_epoch = None
        self.stats["failed_" + reason] += 1
        self.last_refusal = (a.gateway if a else "?", reason, now)  # for `diams-agent status`
        delay = self.rotation.failed()
        self._start_at = now + delay
        log.warning("handshake with %s failed (%s: %s); next: %s in %.1f s",
                    a.gateway if a else "?", reason, explain(reason, after_epoch_hint=hinted),
                    self.rotation.current, delay)

    def _command(self, name: str, message: bytes, now: float) -> None:
        if self.session is None:
            self.stats["commands_dropped_no_session"] += 1
            return
        payload, reason = self.session.open(name.encode(), message, now)
        if payload is None:
            self.stats["commands_dropped_" + str(reason)] += 1
            log.warning("command %r dropped: %s", name, reason)
            return
        self.stats["commands_ok"] += 1
        if name == REAUTH_COMMAND:
            log.info("gateway asks for re-authentication")
            self._reauth_at = now
        elif self._on_command is not None:
            self._on_command(name, bytes(payload))
