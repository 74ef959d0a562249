"""The gateway's hot path: handshake and data messages from MQTT, through defences and the core.

Order of work for a handshake message, cheapest first: topic parse, rate limits and lockout, index
staleness (offline bound), then the sans-IO gateway role (which itself refuses on table look-ups
before its one HMAC). A reply that follows a newly accepted counter is published only once the
counter is durable (group commit, see ``counters``). Data messages are verified under the session
key (MAC, sequence number, stream) and republished on ``diams/v1/v/<device>/<stream>``; forgeries and
replays are dropped, counted and audited (audit lines for a device are rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from device_agent.core import events as ev
from device_agent.core import gateway as core_gateway
from device_agent.core.session import Session

from .defence import Defence

if TYPE_CHECKING:
    from .service import Gateway

log = logging.getLogger("diams.gateway.traffic")

_FAILURES = frozenset({"bad_otp", "bad_proof", "counter_window", "timeout", "stale_epoch", "clone"})
_PREFIX = b"diams/v1/"
_MAX_STREAM = 255
AUDIT_EVERY = 10.0  # seconds between audit records of repeated rejections for one device


class Traffic:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        s = gw.settings
        self.gateway_id = s.gateway_id
        self.role = gw.devices.role
        self.metrics = gw.metrics
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
            now=gw._clock(),
        )
        self._quarantine = d.clone_quarantine
        self._max_staleness = s.offline.max_staleness
        self._audited: dict[tuple[bytes, str], float] = {}
        g = s.gateway_id
        self._gid = g.encode()
        self._down = f"diams/v1/hs/{g}/%s/down"
        self._verified = "diams/v1/v/%s/%s"

    def __repr__(self) -> str:
        return f"Traffic({self.gateway_id}, sessions={len(self.sessions)})"

    def subscriptions(self) -> list[tuple[str, int]]:
        g = self.gateway_id
        return [(f"diams/v1/hs/{g}/+/up", 1), (f"diams/v1/d/{g}/+/+", 1)]

    # ---- dispatch ----
    def on_message(self, topic: bytes, payload: bytes) -> None:
        parts = topic.split(b"/")
        # only this gateway's topics, and device ids in their one canonical form (16 lowercase hex
        # digits, what the broker's %u patterns match): fromhex alone also takes "AB" and spaces
        if len(parts) != 6 or not topic.startswith(_PREFIX) or parts[3] != self._gid:
            self.metrics.inc("dropped", "bad_topic")
            return
        try:
            did = bytes.fromhex(parts[4].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            did = b""
        if len(did) != 8 or did.hex().encode() != parts[4]:
            self.metrics.inc("dropped", "bad_topic")
            return
        kind = parts[2]
        if kind == b"hs" and parts[5] == b"up":
            self.on_handshake(did, payload)
        elif kind == b"d":
            if not 0 < len(parts[5]) <= _MAX_STREAM:  # the MAC frames the stream with one length byte
                self.metrics.inc("dropped", "bad_topic")
                return
            self.on_data(did, parts[5], payload)
        else:
            self.metrics.inc("dropped", "bad_topic")

    # ---- handshakes ----
    def on_handshake(self, did: bytes, payload: bytes) -> None:
        gw = self.gw
        now = gw._clock()
        verdict = self.defence.admit(did, now)
        if not verdict.allowed:
            self.metrics.inc("handshake_refused", verdict.reason)
            return
        if gw.index.staleness() > self._max_staleness:
            self.metrics.inc("handshake_refused", "index_stale")
            self._audit_rejection(did, "index_stale", now)
            return
        reply, events = self.role.receive(did, payload, now)
        durable = None
        for e in events:
            t = type(e)
            if t is core_gateway.CounterAccepted:
                entry = gw.devices.entries[did]
                durable = gw.counters.accept(did, entry.epoch, e.counter, e.nonce)
            elif t is ev.Authenticated:
                self._authenticated(did, e.session, now)
            elif t is ev.Rejected:
                self._rejected(did, e.reason, e.counter, now)
            elif t is core_gateway.CloneDetected:
                self._clone(did, e.counter)
        if reply is None:
            return
        topic = self._down % did.hex()
        if durable is None:
            gw.publish(topic, reply)
        else:
            durable.add_done_callback(lambda f: self._after_commit(f, topic, reply))

    def _after_commit(self, fut: asyncio.Future[None], topic: str, reply: bytes) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.metrics.inc("handshake_refused", "counter_store")
            log.error(
                "counter store failed; challenge withheld: %s", None if fut.cancelled() else fut.exception()
            )
            return
        self.gw.publish(topic, reply)

    def _authenticated(self, did: bytes, session: Session, now: float) -> None:
        self.sessions[did] = session
        self.gw.session_started(did)
        self.defence.succeeded(did)
        self.metrics.inc("authenticated")
        self.gw.audit.append("authenticated", device=did.hex())

    def _rejected(self, did: bytes, reason: str, counter: int | None, now: float) -> None:
        self.metrics.inc("rejected", reason)
        if reason in _FAILURES:
            lock = self.defence.failed(did, now)
            if lock:
                self.metrics.inc("lockouts")
        if did in self.gw.devices.entries:  # unknown ids are counted, not audited (flood-proof)
            self._audit_rejection(did, reason, now, counter)

    def _audit_rejection(self, did: bytes, reason: str, now: float, counter: int | None = None) -> None:
        key = (did, reason)
        last = self._audited.get(key)
        if last is not None and now - last < AUDIT_EVERY:
            return
        if len(self._audited) > 100_000:
            self._audited.clear()
        self._audited[key] = now
        self.gw.audit.append("rejected", device=did.hex(), reason=reason, counter=counter)

    def _clone(self, did: bytes, counter: int) -> None:
        gw = self.gw
        self.metrics.inc("clone_detected")
        gw.audit.append("clone_detected", device=did.hex(), counter=counter)
        log.warning("clone detected: device %s answered a challenge with used counter %d", did.hex(), counter)
        gw.background(gw.report_clone(did, counter))
        if self._quarantine:
            gw.devices.quarantine(did)
            self.drop_session(did, "clone")
            gw.cut_off([did])

    def drop_session(self, did: bytes, why: str) -> None:
        if self.sessions.pop(did, None) is not None:
            self.metrics.inc("sessions_ended", why)
            self.gw.session_ended(did)

    # ---- data ----
    def on_data(self, did: bytes, stream: bytes, payload: bytes) -> None:
        session = self.sessions.get(did)
        if session is None:
            self.metrics.inc("data_dropped", "no_session")
            return
        now = self.gw._clock()
        data, reason = session.open(stream, payload, now)
        if reason is not None:
            self.metrics.inc("data_dropped", reason)
            if reason == "expired":
                self.drop_session(did, "expired")
            else:
                self._audit_rejection(did, "data_" + reason, now)
            return
        served = self.gw.devices.served.get(did)
        name = stream.decode("ascii", "replace")
        if served is None or name not in served.publish:
            self.metrics.inc("data_dropped", "not_in_policy")
            self._audit_rejection(did, "data_not_in_policy", now)
            return
        assert data is not None
        self.metrics.inc("data_verified")
        self.gw.publish(self._verified % (did.hex(), name), data)

    def send_command(self, did: bytes, name: str, payload: bytes) -> bool:
        """Send a MAC'd COMMAND to an authenticated device; False when it has no session."""
        session = self.sessions.get(did)
        if session is None:
            return False
        msg = session.seal(name.encode(), payload)
        return self.gw.publish(f"diams/v1/c/{self.gateway_id}/{did.hex()}/{name}", msg)

    # ---- housekeeping ----
    def sweep(self, now: float) -> None:
        for e in self.role.expire(now):
            self._rejected(e.device_id, e.reason, e.counter, now)
        expired = [d for d, s in self.sessions.items() if s.expires <= now]
        for d in expired:
            self.drop_session(d, "expired")
