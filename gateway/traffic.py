"""The gateway's hot path: handshake and data messages from MQTT, through defences and the core.

Order of work for a handshake message, cheapest first: topic parse, rate limits and lockout, index
staleness (offline bound), then the sans-IO gateway role (which itself refuses on table look-ups
before its one HMAC). A reply that follows a newly accepted counter is published only once the
counter is durable (group commit, see ``counters``). Data messages are verified under the session
key (MAC, sequence number, stream) and republished on the verified topic (this gateway's id, the
device's, the stream; ``device_agent.core.topics``); forgeries and replays are dropped, counted and
audited (audit lines for a device are rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device_agent.core import events as ev
from device_agent.core import gateway as core_gateway
from device_agent.core import topics, wire
from device_agent.core.session import Session

from .audit import AuditUnavailable
from .broker import Change, Demote, Grant
from .defence import DataLimiter, Defence, PreAuthBan

if TYPE_CHECKING:
    from .audit import AuditLog
    from .counters import CounterStore
    from .devices import DeviceTable
    from .ops import Metrics
    from .settings import GatewaySettings

log = logging.getLogger("diams.gateway.traffic")

_FAILURES = frozenset({"bad_otp", "bad_proof", "timeout", "stale_epoch", "clone"})
AUDIT_EVERY = 10.0  # seconds between audit records of repeated rejections for one device
NO_SESSION_EVERY = 1.0  # seconds between "no session" signals to one device
NO_SESSION_REJECT = wire.encode(wire.REJECT, wire.NO_SESSION, 0)


Publish = Callable[[str, bytes], bool]  # topic, payload -> whether it was handed to the broker


@dataclass(frozen=True)
class CloneAlarm:
    """A device answered a challenge with a used counter: the gateway reports it on chain and, with
    ``defence.clone_quarantine``, cuts the device off at the broker (``Traffic.clones``)."""

    device_id: bytes
    counter: int


class Traffic:
    """Strategy: every collaborator is passed in (no reference to the ``Gateway`` that owns it): the
    device table and its core role, the counter store, the audit log, the metrics, the index's
    staleness, the clock, and ``publish``, the one outbound seam. What needs the ledger or the
    broker enforcer (slow, asynchronous) leaves as a ``CloneAlarm`` on ``clones`` for the gateway."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        devices: DeviceTable,
        counters: CounterStore,
        audit: AuditLog,
        metrics: Metrics,
        staleness: Callable[[], float],
        clock: Callable[[], float],
        publish: Publish,
        broker_changes: Callable[[list[Change]], Awaitable[None]] | None = None,
        on_session: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """``on_session(device_id, live)``: a session started (called before its reply is sent) or
        ended; an enforcer that grants data topics per session needs it."""
        s = settings
        self.on_session = on_session or (lambda did, live: None)
        self.gateway_id = s.gateway_id
        self.devices = devices
        self.role = devices.role
        self.counters = counters
        self.audit = audit
        self.metrics = metrics
        self.staleness = staleness
        self.clock = clock
        self.publish = publish
        self.clones: asyncio.Queue[CloneAlarm] = asyncio.Queue()
        self.sessions: dict[bytes, Session] = {}
        d = s.defence
        self.defence = Defence(
            device_rate=d.device_rate,
            device_burst=d.device_burst,
            global_rate=d.global_rate,
            global_burst=d.global_burst,
            lockout_after=d.lockout_after,
            lockout_base=d.lockout_base,
            lockout_max=d.lockout_max,
            max_tracked=d.max_tracked_devices,
            now=clock(),
        )
        self.data_limiter = DataLimiter(
            rate=d.data_rate,
            burst=d.data_burst,
            flood_after=d.data_flood_after,
            max_tracked=d.max_tracked_devices,
            now=clock(),
        )
        self.preauth = PreAuthBan(
            rate=d.preauth_rate,
            burst=d.preauth_burst,
            ban_seconds=d.preauth_ban,
            max_tracked=d.max_tracked_devices,
            now=clock(),
        )
        # devices to cut off at the broker for a while (PreAuthBan): the gateway drains it
        self.bans: asyncio.Queue[bytes] = asyncio.Queue()
        self._quarantine = d.clone_quarantine
        # enforcement.rights = "per_device": the broker enforcer's apply(), for Grant and Demote
        self._broker_changes = broker_changes
        self._per_device = broker_changes is not None
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._max_staleness = s.offline.max_staleness
        self._audited: dict[tuple[bytes, str], float] = {}
        self._signalled: dict[bytes, float] = {}  # device -> when it was last told "no session"

    def __repr__(self) -> str:
        return f"Traffic({self.gateway_id}, sessions={len(self.sessions)})"

    def subscriptions(self) -> list[tuple[str, int]]:
        g = self.gateway_id
        return [
            (topics.topic_filter(topics.HANDSHAKE, g, topics.ANY, topics.UP), 1),
            (topics.topic_filter(topics.DATA, g), 1),
        ]

    # ---- dispatch ----
    def on_message(self, topic: bytes, payload: bytes) -> None:
        # only this gateway's topics, and device ids in their one canonical form (16 lowercase hex
        # digits, what the broker's %u patterns match): the topic module checks every level
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != self.gateway_id:
            self.metrics.inc("dropped", "bad_topic")
            return
        kind, _, device, last = parsed
        did = bytes.fromhex(device)
        if kind == topics.HANDSHAKE and last == topics.UP:
            self.on_handshake(did, payload)
        elif kind == topics.DATA:
            self.on_data(did, last.encode(), payload)
        else:
            self.metrics.inc("dropped", "bad_topic")

    # ---- handshakes ----
    def on_handshake(self, did: bytes, payload: bytes) -> None:
        now = self.clock()
        verdict = self.defence.admit(did, now)
        if not verdict.allowed:
            self.metrics.inc("handshake_refused", verdict.reason)
            self._preauth_refused(did, now)
            return
        if self.staleness() > self._max_staleness:
            self.metrics.inc("handshake_refused", "index_stale")
            self._audit_rejection(did, "index_stale", now)
            return
        reply, events = self.role.receive(did, payload, now)
        durable = None
        granted = False
        for e in events:
            t = type(e)
            if t is core_gateway.CounterAccepted:
                entry = self.devices.entries[did]
                durable = self.counters.accept(did, entry.epoch, e.counter, e.nonce)
                if e.jump > self.role.window:  # accepted (no lockout after an outage), but visible
                    self.metrics.inc("counter_resync")
                    self._audit("counter_resync", device=did.hex(), counter=e.counter, jump=e.jump)
            elif t is ev.Authenticated:
                if not self._authenticated(did, e, now):
                    reply = None  # the log could not record it: no RESULT, the device tries again
                else:
                    granted = self._per_device
            elif t is ev.Rejected:
                self._rejected(did, e.reason, e.counter, now)
            elif t is core_gateway.CloneDetected:
                self._clone(did, e.counter)
        if reply is None:
            return
        topic = topics.handshake_down(self.gateway_id, did.hex())
        if granted:  # per_device rights: the RESULT leaves once the broker lets the device send data
            self._background(self._grant_then_send(did, topic, reply))
        elif durable is None:
            self.publish(topic, reply)
        else:
            durable.add_done_callback(lambda f: self._after_commit(f, topic, reply))

    def _after_commit(self, fut: asyncio.Future[None], topic: str, reply: bytes) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.metrics.inc("handshake_refused", "counter_store")
            log.error(
                "counter store failed; challenge withheld: %s", None if fut.cancelled() else fut.exception()
            )
            return
        self.publish(topic, reply)

    def _authenticated(self, did: bytes, event: ev.Authenticated, now: float) -> bool:
        """Grant the session once its audit record is written; -> False (fail closed) when it is not."""
        try:
            self.audit.append("authenticated", device=did.hex(), epoch=event.epoch, counter=event.counter)
        except AuditUnavailable as exc:
            self.metrics.inc("handshake_refused", "audit_unavailable")
            log.error("session for %s withheld: %s", did.hex(), exc)
            return False
        self.sessions[did] = event.session
        self.data_limiter.reset(did)
        self.on_session(did, True)
        self.defence.succeeded(did)
        self.metrics.inc("authenticated")
        return True

    def _audit(self, event: str, **fields: object) -> None:
        """A record the gateway acts on whether or not it can be written (refusals, clones)."""
        try:
            self.audit.append(event, **fields)
        except AuditUnavailable as exc:
            self.metrics.inc("audit_unavailable", event)
            log.error("audit record %s not written: %s", event, exc)

    def _rejected(self, did: bytes, reason: str, counter: int | None, now: float) -> None:
        self.metrics.inc("rejected", reason)
        if reason in _FAILURES:
            lock = self.defence.failed(did, now)
            if lock:
                self.metrics.inc("lockouts")
        if did in self.devices.entries:  # unknown ids are counted, not audited (flood-proof)
            self._audit_rejection(did, reason, now, counter)

    def _audit_rejection(self, did: bytes, reason: str, now: float, counter: int | None = None) -> None:
        key = (did, reason)
        last = self._audited.get(key)
        if last is not None and now - last < AUDIT_EVERY:
            return
        if len(self._audited) > 100_000:
            self._audited.clear()
        self._audited[key] = now
        self._audit("rejected", device=did.hex(), reason=reason, counter=counter)

    def _clone(self, did: bytes, counter: int) -> None:
        self.metrics.inc("clone_detected")
        self._audit("clone_detected", device=did.hex(), counter=counter)
        log.warning("clone detected: device %s answered a challenge with used counter %d", did.hex(), counter)
        if self._quarantine:
            self.devices.quarantine(did)
            self.drop_session(did, "clone")
        self.clones.put_nowait(CloneAlarm(device_id=did, counter=counter))

    async def _grant_then_send(self, did: bytes, topic: str, reply: bytes) -> None:
        """``enforcement.rights = "per_device"``: Grant the device its policy's streams at the broker,
        and send the RESULT only once the broker enforces it (a reload: up to ~1 s, batched)."""
        served = self.devices.served.get(did)
        streams = served.publish if served is not None else frozenset()
        assert self._broker_changes is not None
        try:
            await self._broker_changes([Grant(device_id=did.hex(), streams=streams)])
        except Exception as exc:
            log.error("grant for %s failed (%s): session withdrawn", did.hex(), exc)
            self.metrics.inc("handshake_refused", "grant_failed")
            self.drop_session(did, "grant_failed")
            return
        if did in self.sessions:
            self.metrics.inc("grants")
            self.publish(topic, reply)

    def drop_session(self, did: bytes, why: str) -> None:
        if self.sessions.pop(did, None) is not None:
            self.metrics.inc("sessions_ended", why)
            self.on_session(did, False)
            if self._per_device:  # back to handshake topics only at the broker
                self._background(self._demote(did))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background_tasks.add(task)  # a reference until it ends (the loop keeps only weak ones)
        task.add_done_callback(self._background_tasks.discard)

    async def _demote(self, did: bytes) -> None:
        assert self._broker_changes is not None
        try:
            await self._broker_changes([Demote(device_id=did.hex())])
            self.metrics.inc("demotes")
        except Exception as exc:
            log.error("demote of %s failed (%s)", did.hex(), exc)
            self.metrics.inc("enforcement_errors")

    # ---- data ----
    def on_data(self, did: bytes, stream: bytes, payload: bytes) -> None:
        session = self.sessions.get(did)
        if session is None:
            self.metrics.inc("data_dropped", "no_session")
            self._no_session(did)
            self._preauth_refused(did, self.clock())
            return
        now = self.clock()
        limited = self.data_limiter.admit(did, now)  # before the MAC: a flood costs a dict look-up
        if limited:
            self.metrics.inc("data_dropped", "rate_limited")
            if limited == "flooding":
                # ``data_flood_after`` messages past its rate in one session: no honest device does that.
                # Ending the session alone would leave it flooding until its pre-authentication
                # allowance ran out (thousands more messages, seconds of everyone's handshakes): the
                # broker cuts it off now, for ``defence.preauth_ban`` seconds.
                self.drop_session(did, "flood")
                self.data_limiter.reset(did)
                banned = self.preauth.ban(did, now)
                ban = self.preauth.ban_seconds if banned else 0
                self._audit("data_flood", device=did.hex(), ban_seconds=ban)
                log.warning(
                    "device %s sent data far past its rate: session ended, cut off at the broker for %.0f s",
                    did.hex(),
                    self.preauth.ban_seconds,
                )
                if banned:
                    self.metrics.inc("flood_bans")
                    self.bans.put_nowait(did)
            return
        data, reason = session.open(stream, payload, now)
        if reason is not None:
            self.metrics.inc("data_dropped", reason)
            if reason == "expired":
                self.drop_session(did, "expired")
            else:
                self._audit_rejection(did, "data_" + reason, now)
            return
        served = self.devices.served.get(did)
        name = stream.decode("ascii", "replace")
        if served is None or name not in served.publish:
            self.metrics.inc("data_dropped", "not_in_policy")
            self._audit_rejection(did, "data_not_in_policy", now)
            return
        assert data is not None
        self.metrics.inc("data_verified")
        self.publish(topics.verified(self.gateway_id, did.hex(), name), data)

    def _preauth_refused(self, did: bytes, now: float) -> None:
        """A refused message from a device that has no session: past its allowance, ban it at the broker."""
        if did not in self.devices.entries or not self.preauth.refused(did, now):
            return
        self.metrics.inc("preauth_bans")
        self._audit("preauth_flood", device=did.hex(), ban_seconds=self.preauth.ban_seconds)
        log.warning(
            "device %s kept sending refused messages before authenticating: cut off at the broker for %.0f s",
            did.hex(),
            self.preauth.ban_seconds,
        )
        self.bans.put_nowait(did)

    def _no_session(self, did: bytes) -> None:
        """Data came without a session (this gateway restarted, or lifted a quarantine): tell the device,
        at most once per ``NO_SESSION_EVERY`` seconds, so that it re-authenticates instead of sending
        into the void. The signal is an unauthenticated REJECT on its handshake topic: a forged one can
        at most make a device run one handshake (the agents' policy ignores it within a few seconds of
        a success and while a handshake runs)."""
        if did not in self.devices.entries:
            return  # not a device this gateway serves: nothing to offer it
        now = self.clock()
        last = self._signalled.get(did)
        if last is not None and now - last < NO_SESSION_EVERY:
            return
        if len(self._signalled) > 100_000:
            self._signalled.clear()
        self._signalled[did] = now
        self.metrics.inc("no_session_signals")
        self._audit_rejection(did, "data_no_session", now)
        self.publish(topics.handshake_down(self.gateway_id, did.hex()), NO_SESSION_REJECT)

    def send_command(self, did: bytes, name: str, payload: bytes) -> bool:
        """Send a MAC'd COMMAND to an authenticated device; False when it has no session."""
        session = self.sessions.get(did)
        if session is None:
            return False
        msg = session.seal(name.encode(), payload)
        return self.publish(topics.command(self.gateway_id, did.hex(), name), msg)

    # ---- housekeeping ----
    def sweep(self, now: float) -> None:
        for e in self.role.expire(now):
            self._rejected(e.device_id, e.reason, e.counter, now)
        expired = [d for d, s in self.sessions.items() if s.expires <= now]
        for d in expired:
            self.drop_session(d, "expired")
