"""The paho agent's sans-IO driver: the core's ``AgentPolicy`` decides, this adapter holds the roles.

Strategy: the driver is fed events by the MQTT adapter (``start``, ``connected``, ``disconnected``,
``login_refused``, ``message``, ``tick``) and returns the MQTT publishes to make; the clock is an
argument of every call. Every decision (which gateway, which epoch and counter, when to retry, when
to re-authenticate, when to dial the broker) is the core's ``device_agent.core.policy`` (shared with
the MicroPython agent and the simulator; its header explains the rules). What stays here is what
holds Python objects: one ``DeviceRole`` per attempt (never reused), the current ``Session`` (replaced
only when a new handshake completes, so data keep flowing during a re-authentication), commands, and
the counter file, written before the HELLO that needs it leaves (``CounterFile``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from device_agent.core import policy as _policy
from device_agent.core import topics as _topics
from device_agent.core.events import Authenticated, Rejected

from . import _core
from .counters import CounterFile
from .keystore import DeviceSecret, KeystoreError
from .reasons import explain
from .rekey import RekeyResponder

__all__ = ["AgentDriver", "Publish"]

log = logging.getLogger("diams.agent")

REAUTH_COMMAND = "reauth"
_P: Any = _policy
_T: Any = _topics


class Publish(NamedTuple):
    topic: str
    payload: bytes


class AgentDriver:
    def __init__(
        self,
        *,
        device_id: bytes,
        secret: DeviceSecret,
        firmware_hash: bytes,
        counters: CounterFile,
        gateways: tuple[str, ...],
        epoch: int = 0,
        answer_timeout: float = 5.0,
        reauth_margin: float = 60.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        reconnect_base: float = 5.0,
        block: int = 16,
        random: Callable[[int], bytes] = os.urandom,
        on_command: Callable[[str, bytes], None] | None = None,
        rekey: RekeyResponder | None = None,
        on_rekey: Callable[[DeviceSecret], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.device_hex = device_id.hex()
        self._secret = secret
        self._fw = firmware_hash
        self.counters = counters
        self._random = random
        self._on_command = on_command
        self._rekey = rekey
        self._on_rekey = on_rekey
        self.policy: Any = _P.AgentPolicy(
            gateways, random, state=counters.read(), epoch=epoch, answer_timeout=answer_timeout,
            reauth_margin=reauth_margin, backoff_base=backoff_base, backoff_cap=backoff_cap,
            reconnect_base=reconnect_base, block=block)
        self.stats: Counter[str] = Counter()
        self.session: Any = None
        self.session_gateway: str | None = None
        self.connect_due = False  # the policy says: dial the broker now
        self.login_epoch = epoch  # ... logging in with P of this epoch (PROTOCOL.md 3.4)
        self._role: Any = None
        self._role_gateway: str | None = None
        self.last_refusal: tuple[str, str, float] | None = None  # (gateway, reason, clock): for `status`

    def __repr__(self) -> str:
        return (f"AgentDriver({self.device_hex}, online={self.policy.online}, "
                f"gateway={self.session_gateway}, attempt={self.policy.attempt is not None})")

    # -- what the adapter asks -------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        subs = [str(_T.handshake_down(g, self.device_hex)) for g in self.policy.gateways]
        if self._rekey is not None:
            subs += [str(_T.rekey_down(g, self.device_hex)) for g in self.policy.gateways]
        return [*subs, str(_T.topic_filter(_T.COMMAND, _T.ANY, self.device_hex))]

    @property
    def authenticated(self) -> bool:
        return self.session is not None

    @property
    def epoch(self) -> int:
        return int(self.policy.epoch)

    def broker_password(self) -> str:
        """P of the login the policy asked for last (the secret is S', once re-keyed)."""
        return _core.broker_password(self._secret.reveal(), self.device_id, self.login_epoch)

    def next_deadline(self) -> float | None:
        t = self.policy.wake_at()
        return None if t is None else float(t)

    def all_stats(self) -> dict[str, int]:
        return {**self.policy.stats, **self.stats}

    # -- events from the adapter -----------------------------------------------------------------

    def start(self, now: float) -> list[Publish]:
        return self._do(self.policy.start(now), now)

    def connected(self, now: float) -> list[Publish]:
        return self._do(self.policy.connected(now), now)

    def disconnected(self, now: float) -> list[Publish]:
        """The broker link dropped: an attempt in flight is abandoned (its reply cannot arrive)."""
        self._role = None
        return self._do(self.policy.disconnected(now), now)

    def login_refused(self, now: float) -> list[Publish]:
        """The broker refused the CONNECT: the policy dials under the next epoch at once while its probe
        lasts (``connect_due`` then), else waits longer before dialling again."""
        self._role = None
        return self._do(self.policy.login_refused(now), now)

    def no_session(self, gateway: str, now: float) -> list[Publish]:
        """A gateway says it holds no session for this device: re-authenticate (at most once)."""
        return self._do(self.policy.no_session(gateway, now), now)

    def tick(self, now: float) -> list[Publish]:
        return self._do(self.policy.tick(now), now)

    def message(self, topic: str, payload: bytes, now: float) -> list[Publish]:
        parsed = _T.parse(topic)
        if parsed is not None and parsed[2] == self.device_hex:
            kind, gateway, _, last = parsed
            if kind == _T.HANDSHAKE and last == _T.DOWN:
                return self._handshake_message(gateway, payload, now)
            if kind == _T.COMMAND and gateway == self.session_gateway:
                return self._command(last, payload, now)
            if kind == _T.REKEY and last == _T.DOWN and self._rekey is not None:
                return self._rekey_message(gateway, payload, now)
        self.stats["stray_messages"] += 1
        return []

    def seal(self, stream: str, payload: bytes, now: float) -> Publish | None:
        """Authenticated DATA for ``stream``, or None while there is no live session."""
        if self.session is None or now >= self.session.expires:
            self.stats["data_unsent"] += 1
            return None
        self.stats["data_sent"] += 1
        assert self.session_gateway is not None
        return Publish(str(_T.data(self.session_gateway, self.device_hex, stream)),
                       self.session.seal(stream.encode(), payload))

    def request_reauth(self, now: float) -> list[Publish]:
        return self._do(self.policy.reauth(now), now)

    # -- internals -------------------------------------------------------------------------------

    def _do(self, actions: list[tuple[Any, ...]], now: float) -> list[Publish]:
        """Carry out the policy's actions in order (a SAVE is durable before the next one runs)."""
        out: list[Publish] = []
        for action in actions:
            kind = action[0]
            if kind == _P.SAVE:
                self.counters.write(action[1])
            elif kind == _P.HELLO:
                out.append(self._hello(action[1], action[2], action[3]))
            elif kind == _P.END_SESSION:
                log.info("session with %s ended (%s)", self.session_gateway, action[1])
                self.session = None
                self.session_gateway = None
            elif kind == _P.CONNECT:
                self.connect_due = True
                self.login_epoch = int(action[1])
        return out

    def _hello(self, gateway: str, epoch: int, counter: int) -> Publish:
        gw = gateway.encode()
        k_dg = _core.gateway_key(self._secret.reveal(), self.device_id, gw, epoch, self._fw)
        self._role = _core.device_role(self.device_id, gw, k_dg, epoch)
        self._role_gateway = gateway
        log.info("HELLO to %s (epoch %d, counter %d)", gateway, epoch, counter)
        hello = self._role.hello(counter, self._random(8))
        return Publish(str(_T.handshake_up(gateway, self.device_hex)), hello)

    def _handshake_message(self, gateway: str, payload: bytes, now: float) -> list[Publish]:
        if _core.no_session_signal(payload):  # never for the role: it would end a handshake in flight
            self.stats["no_session_signals"] += 1
            if gateway == self.session_gateway:
                log.warning("gateway %s holds no session for this device: re-authenticating", gateway)
            return self.no_session(gateway, now)
        attempt = self.policy.attempt
        if self._role is None or attempt is None or attempt[0] != gateway or self._role_gateway != gateway:
            self.stats["stray_messages"] += 1
            return self.tick(now)
        reply, event = self._role.receive(payload, now)
        out = [Publish(str(_T.handshake_up(gateway, self.device_hex)), reply)] if reply is not None else []
        if isinstance(event, Authenticated):
            self._role = None
            self.session = event.session
            self.session_gateway = gateway
            log.info("authenticated with %s (epoch %d), session for %.0f s",
                     gateway, attempt[1], event.session.expires - now)
            return out + self._do(self.policy.authenticated(gateway, event.session.expires, now), now)
        if isinstance(event, Rejected):
            self._role = None
            if event.reason == "stale_epoch" and event.epoch > attempt[1]:
                log.info("%s hints epoch %d (tried %d): retrying under it", gateway, event.epoch, attempt[1])
            else:
                self.last_refusal = (gateway, event.reason, now)
                hinted = attempt[1] != self.policy.epoch  # a trial epoch: the one a stale_epoch hint named
                log.warning("handshake with %s failed (%s: %s)", gateway, event.reason,
                            explain(event.reason, after_epoch_hint=hinted))
            return out + self._do(self.policy.rejected(gateway, event.reason, event.epoch, now), now)
        return out + self.tick(now)

    def _rekey_message(self, gateway: str, payload: bytes, now: float) -> list[Publish]:
        """Re-keying at transfer (docs/PROTOCOL.md 2.3): INIT -> REPLY; a verified CONFIRM commits S'."""
        from device_agent.core.rekey import RekeyError

        assert self._rekey is not None
        try:
            reply, new_secret = self._rekey.message(self._secret.reveal(), payload)
        except RekeyError as exc:
            self.stats["rekey_refused_" + str(exc.reason)] += 1
            log.warning("re-key message via %s refused (%s); the device secret is unchanged",
                        gateway, exc.reason)
            return []
        except KeystoreError as exc:
            self.stats["rekey_refused_no_device_key"] += 1
            log.error("re-key via %s impossible: %s", gateway, exc)
            return []
        out = [Publish(str(_T.rekey_up(gateway, self.device_hex)), reply)] if reply is not None else []
        if new_secret is not None:
            self._secret = DeviceSecret(new_secret)
            self.stats["rekeyed"] += 1
            log.info("re-keyed via %s: new device secret committed; the new owner authorizes gateways next",
                     gateway)
            if self._on_rekey is not None:
                self._on_rekey(self._secret)
            out += self.request_reauth(now)  # handshakes from now on use keys from S'
        return out

    def _command(self, name: str, message: bytes, now: float) -> list[Publish]:
        if self.session is None:
            self.stats["commands_dropped_no_session"] += 1
            return self.tick(now)
        payload, reason = self.session.open(name.encode(), message, now)
        if payload is None:
            self.stats["commands_dropped_" + str(reason)] += 1
            log.warning("command %r dropped: %s", name, reason)
            return self.tick(now)
        self.stats["commands_ok"] += 1
        if name == REAUTH_COMMAND:
            log.info("gateway asks for re-authentication")
            return self.request_reauth(now)
        if self._on_command is not None:
            self._on_command(name, bytes(payload))
        return self.tick(now)
