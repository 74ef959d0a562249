"""The protocol core against an attacker who controls the network (tests/core/netsim.py).

Hypothesis drives interleavings of honest steps (devices start handshakes, the network delivers)
and attacker steps (replay, reorder, reflect, splice, mutate, inject, delay, clone a device); after
every step the security properties are checked against the log of what honest parties really did.
The table-driven tests below pin each claimed property on one hand-built attack.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.core import events, gateway, keys, states, wire
from device_agent.core.gateway import reason_code
from firmware_sim.pair import Fleet, authenticated, handshake
from tests.core.netsim import EPOCH, FW, Net, Violation

# derandomize: CI runs the same interleavings every time; no example database on disk.
# DIAMS_SIM_EXAMPLES raises the count for a deeper run (nightly, or after a protocol change).
EXAMPLES = int(os.environ.get("DIAMS_SIM_EXAMPLES", "1000"))
SIM = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Repeated kinds are drawn more often: enough honest progress for sessions to be established.
KINDS = ("start", "start", "next", "next", "next", "next", "drop", "deliver", "anywhere", "mutate", "craft",
         "craft", "reflect", "inject", "tick", "seal", "seal", "open", "open", "open_mutated", "pump",
         "restart")
ACTION = st.tuples(st.sampled_from(KINDS), st.integers(0, 1 << 16), st.integers(0, 1 << 16),
                   st.integers(0, 255))
# Handshakes only: drops, replays and delays, densely.
HANDSHAKE_ACTION = st.tuples(st.sampled_from(("start", "next", "next", "drop", "deliver", "tick", "mutate")),
                             st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.integers(0, 255))
STREAMS = (b"telemetry", b"config", b"t")


def mutate(payload, op, pos, val):
    """Flip a bit, overwrite, truncate or extend ``payload``; never returns it unchanged."""
    b = bytearray(payload)
    kind = op % 4
    if kind == 0 and b:
        b[pos % len(b)] ^= 1 << (val % 8)
    elif kind == 1 and b:
        b[pos % len(b)] = (b[pos % len(b)] + 1 + val % 255) % 256
    elif kind == 2 and b:
        del b[pos % len(b):]
    else:
        b += bytes((val % 256,)) * (1 + pos % 8)
    return bytes(b)


def run(net, actions, clones):
    for kind, a, b, c in actions:
        if kind == "start":
            if clones and c >= 235:
                net.clone(a)
            else:
                net.start(a, b, skip=(c % 10) if c >= 240 else 0)
        elif kind == "next":
            net.deliver_next()
        elif kind == "restart" and c < 64:
            net.restart_gateway(a)
        elif kind == "drop":
            net.drop_next()
        elif kind == "deliver":
            net.deliver(a, b)
        elif kind == "anywhere" and net.wire:
            net.deliver_anywhere(net.wire[a % len(net.wire)].payload, b, c)
        elif kind == "mutate" and net.wire:
            m = net.wire[a % len(net.wire)]
            if c & 32:
                net.reflect(a, mutate(m.payload, c, b, a))
            else:
                net.deliver_anywhere(mutate(m.payload, c, b, a), b if c & 16 else 1, c)
        elif kind == "craft" and net.wire:
            # Type confusion: a tag lifted into a PROOF, or a message relabelled as another type.
            m = net.wire[a % len(net.wire)]
            if c & 1:
                payload = wire.encode(wire.PROOF, m.payload[-8:].rjust(8, b"\0"))
            else:
                payload = bytes((wire.header(1 + c % 7),)) + m.payload[1:]
            if c & 2:
                net.reflect(a, payload)
            else:
                net.deliver_anywhere(payload, b, c >> 2)
        elif kind == "reflect":
            net.reflect(a)
        elif kind == "inject":
            rnd = a.to_bytes(3, "big") * (1 + c % 8)
            payload = bytes((wire.header(1 + c % 7),)) + rnd[:b % 24] if c & 1 else rnd[:b % 40]
            net.deliver_anywhere(payload, b, c)
        elif kind == "tick":
            net.tick((c % 8) * (4.0 if a & 1 else 0.5))
        elif kind == "seal":
            net.seal(a, STREAMS[b % 3], bytes((c,)) * (b % 5))
        elif kind in ("open", "open_mutated") and net.sealed:
            m = net.sealed[a % len(net.sealed)]
            msg = mutate(m.message, c, b, a) if kind == "open_mutated" else m.message
            # Mostly its own peer and stream; otherwise any session, any stream: reflection, splice.
            receiver = net.peer.get(m.sender, m.sender) if c < 160 else b
            stream = m.stream if c < 200 else STREAMS[c % 3]
            net.open(msg, receiver, stream)
        elif kind == "pump":
            for _ in range(8):
                net.deliver_next()


@SIM
@given(seed=st.integers(0, 1 << 32), actions=st.lists(ACTION, min_size=20, max_size=80))
def test_interleavings_two_devices_two_gateways(seed, actions):
    run(Net(seed, n_devices=2, n_gateways=2), actions, clones=False)


@SIM
@given(seed=st.integers(0, 1 << 32), actions=st.lists(ACTION, min_size=20, max_size=80))
def test_interleavings_with_cloned_devices(seed, actions):
    net = Net(seed, n_devices=3, n_gateways=3)
    net.clone(seed)  # one clone from the start (counters in step with its original), more later
    run(net, actions, clones=True)


def test_honest_schedule_authenticates_everyone_and_data_flows():
    """The simulator itself: with no attacker, every handshake completes and every message opens."""
    net = Net(1, n_devices=3, n_gateways=3)
    for _ in range(3):
        for d in range(3):
            for g in range(3):
                net.start(d, g)
        for _ in range(36):
            net.deliver_next()
        net.tick(1.0)
    assert net.stats["gw_auth"] == net.stats["dev_auth"] == 27
    for k in range(len(net.sessions)):
        net.seal(k, b"telemetry", b"x")
    for m in list(net.sealed):
        net.open(m.message, net.peer[m.sender], m.stream)
    assert net.stats["data_ok"] == len(net.sessions) == 54


def test_clone_is_detected_in_the_simulator():
    net = Net(2, n_devices=1, n_gateways=1)
    net.clone(0)  # a snapshot of the device's key and counters
    net.start(0, 0)
    for _ in range(4):
        net.deliver_next()
    net.start(1, 0)  # the clone reuses the counter the device already spent
    for _ in range(4):
        net.deliver_next()
    assert net.stats["clone"] == 1 and net.stats["gw_auth"] == 1


def test_simulator_catches_a_gateway_that_grants_without_proof():
    """The checker is not vacuous: a gateway that skips the PROOF check is caught."""
    net = Net(3, n_devices=1, n_gateways=1)
    net.start(0, 0)
    net.deliver_next()  # HELLO -> CHALLENGE on the wire
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gateway, "ct_equal", lambda a, b: True)
        with pytest.raises(Violation, match="no key holder"):
            net.to_gateway(b"gw-0", net.instances[0].device_id, wire.encode(wire.PROOF, bytes(8)))


# -- one attack per claimed property ------------------------------------------------------------


def _start(f, did, gw=b"gw-a", counter=1):
    dev = f.device(did, gw)
    hello = dev.hello(counter, os.urandom(8))
    challenge, _ = f.gateways[gw].receive(did, hello, 0.0)
    return dev, hello, challenge


def test_challenge_reflected_as_proof_fails():
    f = Fleet()
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    dev, hello, challenge = _start(f, did)
    _, tag_g = wire.decode(challenge, wire.CHALLENGE)
    reply, ev = gw.receive(did, challenge, 0.0)  # the CHALLENGE itself, reflected
    assert reply is None and isinstance(ev[0], events.Ignored)
    reply, ev = gw.receive(did, wire.encode(wire.PROOF, tag_g), 0.0)
    assert reply is None and ev[0].reason == "bad_proof"
    # Reflections at the device: its own HELLO, and its own PROOF back as a RESULT-sized blob.
    reply, ev = dev.receive(hello, 0.0)
    assert reply is None and isinstance(ev, events.Ignored) and dev.state == states.HELLO_SENT
    proof, _ = dev.receive(challenge, 0.0)
    reply, ev = dev.receive(proof, 0.0)
    assert reply is None and isinstance(ev, events.Ignored) and dev.state == states.PROOF_SENT
    # The forged PROOF did not cancel the real handshake.
    assert isinstance(gw.receive(did, proof, 0.0)[1][0], events.Authenticated)


def test_proof_from_another_gateways_session_fails():
    f = Fleet(gateways=(b"gw-a", b"gw-b"))
    did = f.device_ids[0]
    dev_a, _, _ = _start(f, did, b"gw-a")
    dev_b, _, ch_b = _start(f, did, b"gw-b")
    assert dev_a.receive(ch_b, 0.0)[1].reason == "bad_gateway_proof"  # challenge spliced across
    proof_b, _ = dev_b.receive(ch_b, 0.0)
    reply, ev = f.gateways[b"gw-a"].receive(did, proof_b, 0.0)
    assert reply is None and [e.reason for e in ev] == ["bad_proof"]
    assert f.gateways[b"gw-a"].state_of(did) == gateway.AWAIT_PROOF
    assert authenticated(f.gateways[b"gw-b"].receive(did, proof_b, 0.0)[1][0])


def test_hello_for_one_gateway_is_refused_by_another():
    f = Fleet(gateways=(b"gw-a", b"gw-b"))
    did = f.device_ids[0]
    hello = f.device(did, b"gw-a").hello(1, os.urandom(8))
    reply, ev = f.gateways[b"gw-b"].receive(did, hello, 0.0)
    assert wire.decode(reply, wire.REJECT)[0] == reason_code("bad_otp") and ev[0].reason == "bad_otp"
    assert f.entries[b"gw-b"][did].counter == -1 and f.gateways[b"gw-b"].pending == 0


def test_replayed_hello_after_authentication_is_never_granted():
    f = Fleet()
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    dev = f.device(did, b"gw-a")
    hello = dev.hello(1, os.urandom(8))
    challenge, _ = gw.receive(did, hello, 0.0)
    proof, _ = dev.receive(challenge, 0.0)
    result, ev = gw.receive(did, proof, 0.0)
    assert authenticated(dev.receive(result, 0.0)[1])
    reply, ev = gw.receive(did, hello, 1.0)  # the very HELLO that set the floor: a replay, no probe
    assert reply is None and [e.reason for e in ev] == ["replay"] and gw.pending == 0
    # The HOTP value covers the nonce: a copy with another nonce is refused after one HMAC ...
    forged_nonce = hello[:9] + bytes(8) + hello[17:]
    reply, ev = gw.receive(did, forged_nonce, 1.0)
    assert [e.reason for e in ev] == ["bad_otp"] and gw.pending == 0
    # ... and only a key holder makes a used counter with a new nonce: it is probed, never granted;
    # the honest device, no longer waiting, does not answer.
    probe, ev = gw.receive(did, f.device(did, b"gw-a").hello(1, os.urandom(8)), 1.0)
    assert wire.message_type(probe) == wire.CHALLENGE and ev == []  # no CounterAccepted
    reply, ev = gw.receive(did, hello, 1.0)  # again, while the probe is pending
    assert reply is None and [e.reason for e in ev] == ["replay"]
    assert isinstance(dev.receive(probe, 1.0)[1], events.Ignored)  # authenticated: not expecting one
    reply, ev = gw.receive(did, proof, 1.0)  # the old PROOF does not answer the new nonce
    assert reply is None and ev[0].reason == "bad_proof"
    assert [(e.reason, e.counter) for e in gw.expire(100.0)] == [("replay", 1)]


def test_old_epoch_hello_gets_stale_epoch_with_the_ledger_epoch():
    f = Fleet(epoch=5)
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    old = f.device(did, b"gw-a", epoch=4)
    reply, ev = gw.receive(did, old.hello(1, os.urandom(8)), 0.0)
    assert wire.decode(reply, wire.REJECT) == (reason_code("stale_epoch"), 5)
    assert ev[0].reason == "stale_epoch"
    _, dev_ev = old.receive(reply, 0.0)
    assert (dev_ev.reason, dev_ev.epoch) == ("stale_epoch", 5) and old.state == states.FAILED
    assert f.entries[b"gw-a"][did].counter == -1


@pytest.mark.parametrize(("floor", "counter", "outcome"), [
    (-1, 0, "challenge"), (-1, 5, "challenge"), (-1, 6, "challenge"),
    (10, 16, "challenge"), (10, 17, "challenge"), (10, 0xFFFFFFFF, "challenge"),
    (10, 10, "replay"), (10, 3, "challenge_probe"),
])
def test_any_counter_above_the_floor_gets_a_challenge(floor, counter, outcome):
    """The look-ahead window is no cliff any more (a 24 h outage must not lock a device out): only
    used counters are refused (or probed for a clone)."""
    f = Fleet()
    did = f.device_ids[0]
    f.entries[b"gw-a"][did].counter = floor
    gw = gateway.GatewayRole(b"gw-a", f.entries[b"gw-a"].get, os.urandom, window=6)
    reply, ev = gw.receive(did, f.device(did, b"gw-a").hello(counter, os.urandom(8)), 0.0)
    if outcome == "challenge":
        assert wire.message_type(reply) == wire.CHALLENGE and ev[0].counter == counter
        assert f.entries[b"gw-a"][did].counter == counter
    elif outcome == "challenge_probe":  # a used counter with a valid OTP: a clone probe, floor kept
        assert wire.message_type(reply) == wire.CHALLENGE and ev == []
        assert f.entries[b"gw-a"][did].counter == floor
    else:
        assert f.entries[b"gw-a"][did].counter == floor


@pytest.mark.parametrize(("holder", "expected"), [
    ("clone", "CloneDetected"),          # the real key: a second live holder of it
    ("other_firmware", "bad_otp"),       # K_dg bound to the firmware hash: no probe at all
    ("forged_proof", "bad_proof"),       # a probe answered without the key
])
def test_clone_probe_detects_only_the_real_key(holder, expected):
    f = Fleet()
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    assert authenticated(handshake(f.device(did, b"gw-a"), gw, 1)[0])
    if holder == "other_firmware":
        twin = f.device(did, b"gw-a", fw=os.urandom(32))
    else:
        twin = f.device(did, b"gw-a")
    probe, ev = gw.receive(did, twin.hello(1, os.urandom(8)), 1.0)
    if expected == "bad_otp":
        assert ev[0].reason == "bad_otp" and gw.pending == 0
        return
    assert ev == [] and wire.message_type(probe) == wire.CHALLENGE
    proof = twin.receive(probe, 1.0)[0] if holder == "clone" else wire.encode(wire.PROOF, os.urandom(8))
    reply, ev = gw.receive(did, proof, 1.0)
    names = [type(e).__name__ for e in ev]
    if expected == "CloneDetected":
        assert names == ["CloneDetected", "Rejected"] and ev[1].reason == "clone"
        assert wire.decode(reply, wire.REJECT)[0] == reason_code("clone")
        assert twin.receive(reply, 1.0)[1].reason == "clone" and twin.session is None
    else:
        assert names == ["Rejected"] and ev[0].reason == "bad_proof" and reply is None


def _pair(f, did, gw=b"gw-a", counter=1):
    dev_ev, gw_ev = handshake(f.device(did, gw), f.gateways[gw], counter)
    return dev_ev.session, gw_ev[0].session


@pytest.mark.parametrize("attack", ["forged_tag", "replay", "reordered_back", "reflected", "cross_topic",
                                    "other_session", "truncated", "extended", "wrong_type"])
def test_data_attacks_are_refused_and_honest_data_flows(attack):
    f = Fleet(gateways=(b"gw-a", b"gw-b"))
    did = f.device_ids[0]
    up, down = _pair(f, did)
    up_b, down_b = _pair(f, did, b"gw-b")
    m1, m2 = up.seal(b"telemetry", b"one"), up.seal(b"telemetry", b"two")
    receiver, stream, msg = down, b"telemetry", m1
    if attack == "forged_tag":
        msg = m1[:-1] + bytes((m1[-1] ^ 1,))
    elif attack == "replay":
        assert down.open(b"telemetry", m1, 1.0) == (b"one", None)
    elif attack == "reordered_back":
        assert down.open(b"telemetry", m2, 1.0) == (b"two", None)
    elif attack == "reflected":
        receiver = up
    elif attack == "cross_topic":
        stream = b"config"
    elif attack == "other_session":
        receiver = down_b
        assert up_b.seal(b"telemetry", b"b-one")[:5] == m1[:5]  # same header and seq: only the key differs
    elif attack == "truncated":
        msg = m1[:-3]
    elif attack == "extended":
        msg = m1 + b"\x00"
    elif attack == "wrong_type":
        msg = bytes((wire.header(wire.COMMAND),)) + m1[1:]
    before = receiver.recv_seq
    payload, reason = receiver.open(stream, msg, 1.0)
    assert payload is None and reason in ("forged", "replay", "bad_message") and receiver.recv_seq == before
    # Whatever was tried, the honest stream continues in order.
    if attack not in ("replay", "reordered_back"):
        assert down.open(b"telemetry", m1, 1.0) == (b"one", None)
    if attack != "reordered_back":
        assert down.open(b"telemetry", m2, 1.0) == (b"two", None)
    assert up.open(b"config", down.seal(b"config", b"cmd"), 1.0) == (b"cmd", None)


# -- a flaw the simulator found, and its regression tests ---------------------------------------


def _drain(net):
    """The network delivers everything still in flight, in order, until nothing is left."""
    while any(not m.delivered for m in net.wire):
        net.deliver_next()


def test_no_false_clone_alert_when_the_device_waits_longer_than_the_gateway():
    """A device still waiting on HELLO(c) after the gateway dropped that handshake must not be
    probed by a replay of that HELLO: it would answer, and the gateway would report a clone."""
    net = Net(4, n_devices=1, n_gateways=1, proof_timeout=5.0, device_timeout=30.0)
    net.start(0, 0)
    net.deliver_next()  # HELLO(0) reaches the gateway
    net.drop_next()  # its CHALLENGE is lost
    net.tick(6.0)  # the gateway gives up; the device is still waiting
    net.deliver(0)  # the attacker replays HELLO(0)
    _drain(net)
    assert net.stats["clone"] == net.stats["gw_auth"] == 0
    net.deliver(1)  # the lost CHALLENGE, late: answered, but the gateway has given up
    _drain(net)
    assert net.stats["clone"] == net.stats["gw_auth"] == 0


def test_no_false_clone_alert_across_a_gateway_restart():
    """The floor's device nonce is durable with the counter, so a restart does not reopen the hole."""
    net = Net(4, n_devices=1, n_gateways=1, proof_timeout=5.0, device_timeout=30.0)
    net.start(0, 0)
    net.deliver_next()  # HELLO(0) accepted, floor 0 durable
    net.drop_next()  # its CHALLENGE is lost
    net.restart_gateway(0)
    net.deliver(0)  # the replayed HELLO: a used counter, valid OTP, nothing pending
    _drain(net)
    assert net.stats["clone"] == 0 and net.instances[0].roles[b"gw-0"].state == states.HELLO_SENT


@settings(SIM, max_examples=2 * EXAMPLES)
@given(seed=st.integers(0, 1 << 32), actions=st.lists(HANDSHAKE_ACTION, min_size=10, max_size=40))
def test_interleavings_devices_wait_longer_than_gateways(seed, actions):
    # One device and one gateway: every replay, drop and delay lands on the same pair.
    run(Net(seed, n_devices=1, n_gateways=1, proof_timeout=2.0, device_timeout=40.0), actions, clones=False)


def test_no_false_clone_alert_when_the_device_gives_up_first():
    net = Net(4, n_devices=1, n_gateways=1, proof_timeout=5.0, device_timeout=5.0)
    net.start(0, 0)
    net.deliver_next()
    net.drop_next()
    net.tick(6.0)
    net.deliver(0)
    _drain(net)
    assert net.instances[0].roles[b"gw-0"].state == states.FAILED and net.stats["clone"] == 0


def test_simulator_keys_match_the_key_schedule():
    net = Net(5, n_devices=1, n_gateways=1)
    did = net.instances[0].device_id
    k = keys.gateway_key(net.secrets[did], did, b"gw-0", EPOCH, FW)
    assert keys.pair_keys(k)[1] == net.entries[b"gw-0"][did].k_mac


def test_handshakes_expired_on_the_busy_path_are_still_reported():
    """Regression: _on_hello expires handshakes when the pending table is full; their events are kept."""
    f = Fleet(n_devices=2)
    gw = gateway.GatewayRole(b"gw-a", f.entries[b"gw-a"].get, os.urandom, proof_timeout=2.0, max_pending=1)
    first, second = (f.device(d, b"gw-a") for d in f.device_ids)
    gw.receive(first.device_id, first.hello(1, os.urandom(8)), 0.0)
    _, ev = gw.receive(second.device_id, second.hello(1, os.urandom(8)), 5.0)  # expires the first
    assert [(type(e).__name__, e.device_id) for e in ev if isinstance(e, events.Rejected)] == [
        ("Rejected", first.device_id)]


def test_no_false_clone_alert_from_a_hello_whose_nonce_was_rewritten():
    """Found by the long-wait simulation: the attacker drops the device's HELLO(c), delivers a copy
    with a rewritten nonce, lets that handshake expire, then delivers the genuine HELLO(c). Were the
    nonce not covered by the HOTP value, the rewritten copy would set the floor's nonce, the genuine
    HELLO would be probed, the still-waiting device would answer, and the gateway would see a clone."""
    net = Net(4, n_devices=1, n_gateways=1, proof_timeout=5.0, device_timeout=30.0)
    net.start(0, 0)
    net.drop_next()
    hello = net.wire[0]
    rewritten = bytearray(hello.payload)
    rewritten[9] ^= 1  # the first byte of the device nonce
    net.to_gateway(hello.gw, hello.device_id, bytes(rewritten))
    while any(not m.delivered for m in net.wire):  # whatever answer it got never reaches the device
        net.drop_next()
    net.tick(6.0)
    net.deliver(0)  # the genuine HELLO, late
    _drain(net)
    assert net.stats["clone"] == 0


def test_dropping_more_hellos_than_the_window_is_no_lasting_denial_of_service():
    """The attacker on the path drops 3 windows' worth of HELLOs (each one spent a counter), then
    lets the next through: the device authenticates at once. Delivering the dropped HELLOs afterwards
    (below the floor now) grants nothing, and the properties hold at every step."""
    net = Net(6, n_devices=1, n_gateways=1, window=6)
    for _ in range(3 * 6 + 1):
        net.start(0, 0)
        net.drop_next()
        net.tick(net.device_timeout + 0.1)
    net.start(0, 0)
    for _ in range(4):  # HELLO, CHALLENGE, PROOF, RESULT
        net.deliver_next()
    assert net.stats["gw_auth"] == 1 and net.stats["dev_auth"] == 1
    for i in range(3 * 6 + 1):  # the dropped HELLOs, replayed late: at most clone probes, never granted
        net.deliver(i)
        net.tick(6.0)
    assert net.stats["gw_auth"] == 1
