"""An in-memory DIAMS network whose every delivery is chosen by an attacker, with a ground-truth log.

Strategy: honest parties (devices, cloned devices, gateways) only ever react to what the attacker
delivers; each reaction is recorded in a log of what that party actually did (HELLOs and PROOFs a
device sent, challenges a gateway issued, handshakes it granted). The security properties are then
checked against that log after every step, so a test fails at the first step that breaks one.

The attacker sees every message ever sent and may deliver any of them, any number of times, to any
party (replay, reorder, reflect, splice), mutate it first (flip, truncate, extend), inject garbage,
drop (by never delivering), and let time pass. The clock is shared; a device gives up a handshake
after ``device_timeout`` seconds, which must not exceed the gateway's ``proof_timeout``.
"""

import random
from dataclasses import dataclass, field

from device_agent.core import device, events, gateway, identity, keys, states
from device_agent.core.errors import REASONS

EPOCH = 2
FW = bytes(range(32))
DEFINED_EVENTS = (events.Authenticated, events.Rejected, events.Ignored, gateway.CounterAccepted,
                  gateway.CloneDetected)


@dataclass
class Message:
    """One message on the wire: ``up`` (device -> gateway ``gw`` on ``device_id``'s topic) or down."""

    direction: str
    device_id: bytes
    gw: bytes
    payload: bytes
    delivered: bool = False


@dataclass
class Sealed:
    """One DATA or COMMAND message an honest session sealed."""

    sender: int  # index into Net.sessions of the sealing session
    stream: bytes
    seq: int
    payload: bytes
    message: bytes


@dataclass
class Instance:
    """One holder of a device key: the device itself, or a clone made from a snapshot of it."""

    device_id: bytes
    clone: bool
    roles: dict  # gateway id -> DeviceRole
    counters: dict  # gateway id -> next counter to use
    deadlines: dict = field(default_factory=dict)  # gateway id -> when this handshake is given up


class Violation(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Violation(what)


class Net:
    def __init__(self, seed, n_devices=2, n_gateways=2, window=6, proof_timeout=5.0, device_timeout=None,
                 lifetime=30):
        self.rng = random.Random(seed)
        self.now = 0.0
        self.device_timeout = proof_timeout if device_timeout is None else device_timeout
        self.gateway_ids = [b"gw-%d" % i for i in range(n_gateways)]
        self.secrets = {}
        self.entries = {g: {} for g in self.gateway_ids}
        self.gateways = {}
        self.instances = []
        for i in range(n_devices):
            secret = self.rng.randbytes(32)
            did = identity.derive_device_id(secret, "sensor", "SN%d" % i, bytes(6))
            self.secrets[did] = secret
            roles = {}
            for g in self.gateway_ids:
                k = keys.gateway_key(secret, did, g, EPOCH, FW)
                self.entries[g][did] = gateway.DeviceEntry(did, k, EPOCH, lifetime=lifetime)
                roles[g] = device.DeviceRole(did, g, k, EPOCH)
            self.instances.append(Instance(did, False, roles, {g: 0 for g in self.gateway_ids}))
        for g in self.gateway_ids:
            self.gateways[g] = gateway.GatewayRole(g, self.entries[g].get, self.rng.randbytes, window=window,
                                                   proof_timeout=proof_timeout)
        self.wire = []  # every Message ever sent, in order
        self.cloned = set()  # device ids with a clone in this run
        # Ground truth.
        self.device_proofs = {}  # transcript -> PROOF bytes a key holder sent for it
        self.issued = {}  # transcript -> probe? (a challenge a gateway issued)
        self.granted = set()  # transcripts a gateway granted
        self.gw_auth = set()  # transcripts a gateway emitted Authenticated for
        self.gw_counters = set()  # (gateway, device id, counter) a gateway emitted Authenticated for
        self.dev_auth = set()  # transcripts a device emitted Authenticated for
        self.accepted = {}  # (gateway, device id) -> counters accepted, in order
        self.keys = {}  # session key -> transcript it belongs to
        self.sessions = []  # every Session an Authenticated carried
        self.peer = {}  # session index -> index of the other side's session of the same run
        self.by_transcript = {}  # transcript -> session indexes
        self.sealed = []  # every Sealed message
        self.stats = {"gw_auth": 0, "dev_auth": 0, "clone": 0, "data_ok": 0}

    # -- honest parties --------------------------------------------------------------------------

    def clone(self, index):
        """A clone of instance ``index``: same keys, a snapshot of its counters."""
        src = self.instances[index % len(self.instances)]
        did = src.device_id
        roles = {}
        for g in self.gateway_ids:
            k = keys.gateway_key(self.secrets[did], did, g, EPOCH, FW)
            roles[g] = device.DeviceRole(did, g, k, EPOCH)
        self.instances.append(Instance(did, True, roles, dict(src.counters)))
        self.cloned.add(did)

    def start(self, index, gw_index, skip=0):
        """Instance ``index`` starts a handshake with a gateway, ``skip`` counters ahead."""
        inst = self.instances[index % len(self.instances)]
        g = self.gateway_ids[gw_index % len(self.gateway_ids)]
        counter = inst.counters[g] + skip
        if counter > 0xFFFFFFFF:
            return
        inst.counters[g] = counter + 1
        hello = inst.roles[g].hello(counter, self.rng.randbytes(8))
        inst.deadlines[g] = self.now + self.device_timeout
        self.wire.append(Message("up", inst.device_id, g, hello))

    def restart_gateway(self, gw_index):
        """A gateway restarts: pending handshakes are lost; the counter floors and their device nonces
        (durable, CounterAccepted) and the keys come back from storage and the ledger."""
        g = self.gateway_ids[gw_index % len(self.gateway_ids)]
        old = self.gateways[g]
        entries = {}
        for did, e in self.entries[g].items():
            k = keys.gateway_key(self.secrets[did], did, g, EPOCH, FW)
            entries[did] = gateway.DeviceEntry(did, k, e.epoch, e.active, e.counter, e.lifetime, e.nonce)
        self.entries[g] = entries
        self.gateways[g] = gateway.GatewayRole(g, entries.get, self.rng.randbytes, window=old.window,
                                               proof_timeout=old.proof_timeout)

    def tick(self, dt):
        """Time passes: devices give up handshakes past their deadline, gateways expire theirs."""
        self.now += dt
        for inst in self.instances:
            for g, role in inst.roles.items():
                if role.state in (states.HELLO_SENT, states.PROOF_SENT) and self.now >= inst.deadlines[g]:
                    self._device_event(inst, role, role.timeout())
        for g, gw in self.gateways.items():
            for ev in gw.expire(self.now):
                self._gateway_event(g, ev, None)

    # -- deliveries ------------------------------------------------------------------------------

    def to_gateway(self, g, device_id, payload):
        gw = self.gateways[g]
        before = gw._pending.get(device_id)
        reply, evs = gw.receive(device_id, payload, self.now)
        check(isinstance(evs, list), "gateway events must be a list")
        after = gw._pending.get(device_id)
        if after is not None and after is not before:
            # A challenge is a clone probe exactly when its HELLO did not raise the counter floor.
            fresh = any(isinstance(e, gateway.CounterAccepted) and e.counter == after.counter for e in evs)
            check(after.t not in self.issued, "a gateway issued two challenges for one transcript")
            check(after.probe != fresh, "a challenge for a spent counter that is not a clone probe")
            self.issued[after.t] = after.probe
        for ev in evs:
            self._gateway_event(g, ev, (device_id, payload, before))
        if reply is not None:
            check(isinstance(reply, bytes), "gateway reply must be bytes")
            if before is not None and any(isinstance(e, events.Authenticated) for e in evs):
                self.granted.add(before.t)
            self.wire.append(Message("down", device_id, g, reply))

    def to_device(self, index, g, payload):
        inst = self.instances[index % len(self.instances)]
        role = inst.roles[g]
        reply, ev = role.receive(payload, self.now)
        if reply is not None:
            check(isinstance(reply, bytes) and role.state == states.PROOF_SENT, "device replied, not a PROOF")
            self.device_proofs[role._t] = reply
            self.wire.append(Message("up", inst.device_id, g, reply))
        self._device_event(inst, role, ev)

    def deliver(self, i, pick=None):
        """Deliver wire message ``i`` where its sender meant it (a replay if already delivered).

        A message down a device's topic reaches every holder of that device's key, as a broker
        fans it out to every subscriber, or only the ``pick``-th one.
        """
        if not self.wire:
            return
        m = self.wire[i % len(self.wire)]
        m.delivered = True
        if m.direction == "up":
            self.to_gateway(m.gw, m.device_id, m.payload)
        else:
            holders = [k for k, inst in enumerate(self.instances) if inst.device_id == m.device_id]
            if holders and pick is not None:
                holders = [holders[pick % len(holders)]]
            for k in holders:  # none for a REJECT down an unknown device's topic
                self.to_device(k, m.gw, m.payload)

    def deliver_next(self):
        """Deliver the oldest message not yet delivered: the honest network."""
        for i, m in enumerate(self.wire):
            if not m.delivered:
                self.deliver(i)
                return

    def reflect(self, i, payload=None):
        """Send ``payload`` (default: wire message ``i`` itself) back to whoever sent message ``i``."""
        if not self.wire:
            return
        m = self.wire[i % len(self.wire)]
        payload = m.payload if payload is None else payload
        if m.direction == "down":
            self.to_gateway(m.gw, m.device_id, payload)
        else:
            holders = [k for k, inst in enumerate(self.instances) if inst.device_id == m.device_id]
            self.to_device(holders[i % len(holders)], m.gw, payload)

    def drop_next(self):
        """The oldest message not yet delivered is lost (it stays on record for replays)."""
        for m in self.wire:
            if not m.delivered:
                m.delivered = True
                return

    def deliver_anywhere(self, payload, target, sub):
        """Deliver ``payload`` to any party: a gateway on any device's topic, or any device role."""
        n_gw = len(self.gateway_ids)
        g = self.gateway_ids[sub % n_gw]
        if target % 2:
            dids = [*self.secrets, bytes(8)]
            self.to_gateway(g, dids[(target // 2) % len(dids)], payload)
        else:
            self.to_device(target // 2, g, payload)

    # -- events against the ground truth ---------------------------------------------------------

    def _gateway_event(self, g, ev, ctx):
        check(isinstance(ev, DEFINED_EVENTS), "undefined gateway event %r" % (ev,))
        if isinstance(ev, events.Rejected):
            check(ev.reason in REASONS, "unknown reason %r" % ev.reason)
        elif isinstance(ev, events.Ignored):
            check(ev.reason in REASONS or ev.reason == "challenge_ok", "unknown reason %r" % ev.reason)
        elif isinstance(ev, gateway.CounterAccepted):
            seen = self.accepted.setdefault((g, ev.device_id), [])
            check(not seen or ev.counter > seen[-1], "counter %d accepted after %r" % (ev.counter, seen))
            seen.append(ev.counter)
        elif isinstance(ev, gateway.CloneDetected):
            check(ev.device_id in self.cloned, "false clone alert for %s" % ev.device_id.hex())
            self.stats["clone"] += 1
        elif isinstance(ev, events.Authenticated):
            device_id, payload, pending = ctx
            check(pending is not None and not pending.probe, "Authenticated without a pending handshake")
            t = pending.t
            check(self.issued.get(t) is False, "granted a transcript it never challenged normally")
            check(t in self.device_proofs, "gateway authenticated a run no key holder proved")
            check(self.device_proofs[t] == payload, "gateway authenticated a PROOF no key holder sent")
            check(t[8:16] == device_id == ev.session.device_id, "authenticated the wrong device")
            check(ev.session.gateway_id == g and keys.lp(g) == t[16:17 + len(g)], "wrong gateway in run")
            check(t not in self.gw_auth, "gateway authenticated one device run twice")
            at = 17 + len(g) + 4  # the counter, after the gateway id and the epoch
            counter = int.from_bytes(t[at:at + 4], "big")
            check(counter in self.accepted.get((g, device_id), ()), "authenticated a counter never accepted")
            check((g, device_id, counter) not in self.gw_counters, "authenticated one counter twice")
            self.gw_counters.add((g, device_id, counter))
            self.gw_auth.add(t)
            self.stats["gw_auth"] += 1
            self._session(ev.session, t)

    def _device_event(self, inst, role, ev):
        check(isinstance(ev, DEFINED_EVENTS), "undefined device event %r" % (ev,))
        gateway_only = (gateway.CounterAccepted, gateway.CloneDetected)
        check(not isinstance(ev, gateway_only), "gateway event at a device")
        if isinstance(ev, events.Rejected | events.Ignored):
            check(ev.reason in REASONS or ev.reason == "challenge_ok", "unknown reason %r" % ev.reason)
        if isinstance(ev, events.Authenticated):
            t = role._t
            check(t in self.granted, "device authenticated a run no gateway granted")
            check(self.issued.get(t) is False, "device authenticated a clone probe")
            g = role.gateway_id
            check(keys.lp(g) == t[16:17 + len(g)], "device agreed on another gateway")
            check(t not in self.dev_auth, "a device authenticated one run twice")
            self.dev_auth.add(t)
            self.stats["dev_auth"] += 1
            self._session(ev.session, t)

    def _session(self, s, t):
        check(s._send_key != s._recv_key, "a session uses one key both ways")
        for k in (s._send_key, s._recv_key):
            check(self.keys.setdefault(k, t) == t, "two runs share a session key")
        idx = len(self.sessions)
        self.sessions.append(s)
        others = self.by_transcript.setdefault(t, [])
        check(len(others) < 2, "more than two sessions for one run")
        for o in others:
            check(self.sessions[o]._send_key == s._recv_key and self.sessions[o]._recv_key == s._send_key,
                  "the two sides of one run disagree on the session keys")
            self.peer[o], self.peer[idx] = idx, o
        others.append(idx)

    # -- data after authentication ---------------------------------------------------------------

    def seal(self, i, stream, payload):
        if not self.sessions:
            return
        k = i % len(self.sessions)
        s = self.sessions[k]
        if s.send_seq >= 0xFFFFFFFF:
            return
        msg = s.seal(stream, payload)
        self.sealed.append(Sealed(k, stream, s.send_seq, payload, msg))

    def open(self, message, receiver, stream):
        """Session ``receiver`` opens ``message`` on ``stream``; -> checks against the oracle."""
        if not self.sessions:
            return
        r = receiver % len(self.sessions)
        s = self.sessions[r]
        before = s.recv_seq
        payload, reason = s.open(stream, message, self.now)
        check((payload is None) != (reason is None), "open must return a payload or a reason")
        genuine = [m for m in self.sealed if m.message == message and self.peer.get(m.sender) == r
                   and m.stream == stream]
        want = next((m for m in genuine if m.seq > before), None) if self.now < s.expires else None
        if want is None:
            check(payload is None and s.recv_seq == before,
                  "accepted a forged, replayed, reflected or moved message (%s)" % reason)
        else:
            check(payload == want.payload and s.recv_seq == want.seq,
                  "refused a genuine in-order message: %s" % reason)
            self.stats["data_ok"] += 1
