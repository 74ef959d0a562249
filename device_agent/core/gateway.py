# The gateway role: sans-IO, one object serving every device of one gateway.
#
# Strategy: reject as much as possible before doing any work. A HELLO costs at most one HMAC
# before a challenge is committed to: unknown device, inactive device, wrong epoch and malformed
# bytes are refused on table look-ups alone, and a bad HOTP value after one HMAC. Any counter above
# the floor is accepted, however far: the HELLO carries its counter explicitly and the HOTP value
# covers it, so a far counter is no easier to forge than a near one, and refusing it would turn an
# outage (every retry spends a counter) into a lockout. A jump beyond ``window`` is only reported
# (``CounterAccepted.jump``); the adapter rate-limits HELLOs per device, which is what bounds guessing.
# A counter at or below the last accepted one is a replay, unless it carries a valid
# HOTP value and no handshake is pending for the device: then the gateway issues a challenge it
# will never grant (a "clone probe"); a valid PROOF to it can only come from a live holder of the
# device's key using a counter already spent: a cloned device. A replayed HELLO never gets that far,
# and a copy of the very HELLO that set the floor (same counter, same device nonce) is refused as a
# replay without a probe: its sender may still be waiting for the answer, and would answer the probe.
#
# The adapter supplies ``lookup(device_id) -> DeviceEntry | None`` from its identity index, a
# CSPRNG ``random(n)``, and ``now`` (seconds, monotonic) on every call; it must make each
# CounterAccepted (counter and device nonce) durable before sending the reply that comes with it,
# and give both back to DeviceEntry when it rebuilds an entry.
from . import states, wire
from .crypto import ct_equal, hmac_sha256
from .errors import REASONS, LocalProtocolError, RemoteProtocolError
from .events import Authenticated, Ignored, Rejected, _hex
from .keys import pair_keys, proof_tag, session_keys, transcript
from .otp import hotp_value
from .session import Session

# The gateway role's transitions, per device: at most one pending handshake. (The device role's
# table is in states.py; both go through states.advance.)
#
#   NONE --hello (fresh counter, or used counter + valid OTP = clone probe)--> AWAIT_PROOF
#   AWAIT_PROOF --hello (fresh counter)--> AWAIT_PROOF (newer handshake replaces it)
#   AWAIT_PROOF --bad_proof--> AWAIT_PROOF (a forged PROOF must not cancel the real handshake)
#   AWAIT_PROOF --proof / timeout--> NONE (authenticated, clone detected, or rejected)
#   A PROOF in NONE has no transition: it is ignored (remote). GatewayRole._advance applies this table.
NONE = "none"
AWAIT_PROOF = "await_proof"

TABLE = {
    (NONE, "hello"): AWAIT_PROOF,
    (AWAIT_PROOF, "hello"): AWAIT_PROOF,
    (AWAIT_PROOF, "bad_proof"): AWAIT_PROOF,
    (AWAIT_PROOF, "proof"): NONE,
    (AWAIT_PROOF, "timeout"): NONE,
}


class CounterAccepted:
    """Gateway: the adapter must make this counter and nonce durable BEFORE it sends the reply."""

    def __init__(self, device_id, counter, nonce=None, jump=1):
        self.device_id = device_id
        self.counter = counter
        self.nonce = nonce
        self.jump = jump  # counter - previous floor: large after an outage (retries spend counters)

    def __repr__(self):
        return "CounterAccepted(%s, %d)" % (_hex(self.device_id), self.counter)


class CloneDetected:
    """Gateway: a live proof came with an already-used counter: two devices hold one key."""

    def __init__(self, device_id, counter):
        self.device_id = device_id
        self.counter = counter

    def __repr__(self):
        return "CloneDetected(%s, %d)" % (_hex(self.device_id), self.counter)



def reason_code(name):
    return REASONS.index(name)


class DeviceEntry:
    """What one gateway knows of one device: from the identity index, plus the counter floor."""

    __slots__ = ("device_id", "epoch", "active", "counter", "nonce", "k_otp", "k_mac", "lifetime")

    def __init__(self, device_id, gateway_key, epoch, active=True, counter=-1, lifetime=3600, nonce=None):
        self.device_id = device_id
        self.epoch = epoch
        self.active = active
        self.counter = counter  # highest counter ever accepted (durable), -1 for none
        self.nonce = nonce  # the device nonce of the HELLO that set ``counter`` (durable with it)
        self.k_otp, self.k_mac = pair_keys(gateway_key)
        self.lifetime = lifetime

    def __repr__(self):
        return "DeviceEntry(%s, epoch=%d, active=%s, counter=%d)" % (
            self.device_id.hex(), self.epoch, self.active, self.counter)


class _Pending:
    __slots__ = ("entry", "counter", "t", "deadline", "probe")

    def __init__(self, entry, counter, t, deadline, probe):
        self.entry = entry
        self.counter = counter
        self.t = t
        self.deadline = deadline
        self.probe = probe


class GatewayRole:
    def __init__(self, gateway_id, lookup, random, *, window=100, proof_timeout=10.0, max_pending=65536):
        if not gateway_id or window < 1 or proof_timeout <= 0 or max_pending < 1:
            raise LocalProtocolError("bad gateway role settings")
        self.gateway_id = gateway_id
        self._lookup = lookup
        self._random = random
        self.window = window  # jumps beyond it are reported (CounterAccepted.jump), never refused
        self.proof_timeout = proof_timeout
        self.max_pending = max_pending
        self._pending = {}  # device_id -> _Pending, in deadline order (insertion order)

    def __repr__(self):
        return "GatewayRole(%s, pending=%d)" % (self.gateway_id.decode(), len(self._pending))

    @property
    def pending(self):
        return len(self._pending)

    def state_of(self, device_id):
        return AWAIT_PROOF if device_id in self._pending else NONE

    def _advance(self, device_id, event, pending=None):
        # The only place a device's handshake state changes: by TABLE (above).
        state = self.state_of(device_id)
        nxt = states.advance(TABLE, state, event)
        if nxt is None:
            raise LocalProtocolError("gateway role: no %s transition from %s" % (event, state))
        if nxt == NONE:
            del self._pending[device_id]
        elif pending is not None:
            self._pending.pop(device_id, None)  # re-insert at the end: keeps deadline order
            self._pending[device_id] = pending
        return nxt

    def receive(self, device_id, payload, now):
        """One message from ``device_id``'s handshake-up topic -> (reply bytes or None, [events])."""
        try:
            mtype = wire.message_type(payload)
            if mtype == wire.HELLO:
                return self._on_hello(device_id, payload, now)
            if mtype == wire.PROOF:
                return self._on_proof(device_id, payload, now)
            return None, [Ignored("unexpected")]
        except RemoteProtocolError as exc:
            return self._reject(device_id, exc.reason)

    def _reject(self, device_id, reason, counter=None, epoch=0):
        return wire.encode(wire.REJECT, reason_code(reason), epoch), [Rejected(device_id, reason, counter)]

    def _on_hello(self, device_id, payload, now):
        epoch, counter, d_nonce, otp = wire.decode(payload, wire.HELLO)
        entry = self._lookup(device_id)
        if entry is None:
            return self._reject(device_id, "unknown_device", counter)
        if not entry.active:
            return self._reject(device_id, "not_active", counter)
        if epoch != entry.epoch:
            return self._reject(device_id, "stale_epoch", counter, entry.epoch)
        stale = counter <= entry.counter
        pending = self._pending.get(device_id)
        if stale and (pending is not None or (counter == entry.counter and d_nonce == entry.nonce)):
            # A copy of the accepted HELLO itself is a replay, never a clone: the device that sent it
            # may still be waiting for its answer, and would answer a probe.
            return None, [Rejected(device_id, "replay", counter)]
        events = []
        if pending is None and len(self._pending) >= self.max_pending:
            events = self.expire(now)  # handshakes that timed out: reported, not lost
            if len(self._pending) >= self.max_pending:
                reply, rejected = self._reject(device_id, "busy", counter)
                return reply, events + rejected
        if not ct_equal(hotp_value(entry.k_otp, counter, "sha256", d_nonce).to_bytes(4, "big"), otp):
            reply, rejected = self._reject(device_id, "bad_otp", counter)
            return reply, events + rejected
        if not stale:
            jump = counter - entry.counter
            entry.counter = counter
            entry.nonce = d_nonce
            events.append(CounterAccepted(device_id, counter, d_nonce, jump))
        g_nonce = self._random(wire.NONCE_LEN)
        t = transcript(device_id, self.gateway_id, epoch, counter, d_nonce, g_nonce)
        self._advance(device_id, "hello", _Pending(entry, counter, t, now + self.proof_timeout, stale))
        return wire.encode(wire.CHALLENGE, g_nonce, proof_tag(entry.k_mac, wire.CHALLENGE, t)), events

    def _on_proof(self, device_id, payload, now):
        tag = wire.decode(payload, wire.PROOF)[0]
        if states.advance(TABLE, self.state_of(device_id), "proof") is None:
            return None, [Rejected(device_id, "unexpected")]
        p = self._pending[device_id]
        if now > p.deadline:
            self._advance(device_id, "timeout")
            return self._reject(device_id, "timeout", p.counter)
        entry = p.entry
        if not ct_equal(proof_tag(entry.k_mac, wire.PROOF, p.t), tag):
            # No reply, and the pending handshake stays: a forged PROOF must not cancel the real one.
            self._advance(device_id, "bad_proof")
            return None, [Rejected(device_id, "bad_proof", p.counter)]
        self._advance(device_id, "proof")
        if p.probe:
            return (wire.encode(wire.REJECT, reason_code("clone"), 0),
                    [CloneDetected(device_id, p.counter), Rejected(device_id, "clone", p.counter)])
        k_up, k_down = session_keys(entry.k_mac, p.t)
        body = wire.result_body(0, entry.lifetime)
        tag = hmac_sha256(k_down, body + p.t)[:wire.TAG_LEN]
        session = Session(device_id, self.gateway_id, k_down, k_up, wire.COMMAND, wire.DATA,
                          now + entry.lifetime)
        return body + tag, [Authenticated(session, p.counter, entry.epoch)]

    def expire(self, now):
        """Drop handshakes whose PROOF did not come in time -> [Rejected] (``replay`` for probes)."""
        out = []
        pending = self._pending
        while pending:
            device_id = next(iter(pending))
            p = pending[device_id]
            if p.deadline >= now:
                break
            self._advance(device_id, "timeout")
            out.append(Rejected(device_id, "replay" if p.probe else "timeout", p.counter))
        return out
