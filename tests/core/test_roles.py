"""The two roles against each other in memory: outcomes, rejections and their reasons."""

import os

import pytest

from device_agent.core import events, gateway, states, wire
from device_agent.core.errors import REASONS, LocalProtocolError
from firmware_sim.pair import Fleet, authenticated, handshake


def test_full_handshake_then_data_both_ways():
    f = Fleet()
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    dev = f.device(did, b"gw-a")
    hello = dev.hello(1, os.urandom(8))
    challenge, ev = gw.receive(did, hello, 0.0)
    assert [type(e) for e in ev] == [gateway.CounterAccepted] and ev[0].counter == 1
    assert gw.state_of(did) == gateway.AWAIT_PROOF and dev.state == states.HELLO_SENT
    proof, _ = dev.receive(challenge, 0.0)
    assert dev.state == states.PROOF_SENT
    result, ev = gw.receive(did, proof, 0.0)
    assert isinstance(ev[0], events.Authenticated) and gw.state_of(did) == gateway.NONE
    _, done = dev.receive(result, 0.0)
    assert authenticated(done) and dev.state == states.AUTHENTICATED
    sizes = [len(hello), len(challenge), len(proof), len(result)]
    assert sizes == [21, 17, 9, 14] and sum(sizes) <= 100
    up, down = done.session, ev[0].session
    for i in range(5):
        assert down.open(b"telemetry", up.seal(b"telemetry", b"v%d" % i), 1.0) == (b"v%d" % i, None)
    assert up.open(b"config", down.seal(b"config", b"x"), 1.0) == (b"x", None)


def test_session_expires_after_its_lifetime():
    f = Fleet()
    did = f.device_ids[0]
    ev, gw_ev = handshake(f.device(did, b"gw-a"), f.gateways[b"gw-a"], 1, now=100.0)
    msg = ev.session.seal(b"t", b"late")
    assert gw_ev[0].session.open(b"t", msg, 100.0 + 60) == (None, "expired")
    assert gw_ev[0].session.open(b"t", msg, 100.0 + 59) == (b"late", None)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f, did: f.entries[b"gw-a"].pop(did), "unknown_device"),
        (lambda f, did: setattr(f.entries[b"gw-a"][did], "active", False), "not_active"),
        (lambda f, did: setattr(f.entries[b"gw-a"][did], "epoch", 7), "stale_epoch"),
        (lambda f, did: setattr(f.entries[b"gw-a"][did], "counter", 5), "replay_probe"),
    ],
)
def test_hello_rejections_by_table_lookup(mutate, reason):
    f = Fleet()
    did = f.device_ids[0]
    mutate(f, did)
    dev = f.device(did, b"gw-a")
    reply, ev = f.gateways[b"gw-a"].receive(did, dev.hello(3, os.urandom(8)), 0.0)
    if reason == "replay_probe":
        # a used counter with a valid OTP: challenged, never granted, and no counter accepted
        assert wire.message_type(reply) == wire.CHALLENGE and ev == []
        proof, _ = dev.receive(reply, 0.0)
        result, ev = f.gateways[b"gw-a"].receive(did, proof, 0.0)
        assert [type(e) for e in ev] == [gateway.CloneDetected, events.Rejected]
        assert wire.decode(result, wire.REJECT)[0] == REASONS.index("clone")
        return
    assert wire.decode(reply, wire.REJECT)[0] == REASONS.index(reason)
    assert ev[0].reason == reason
    _, dev_ev = dev.receive(reply, 0.0)
    assert dev_ev.reason == reason and dev.state == states.FAILED
    if reason == "stale_epoch":
        assert dev_ev.epoch == 7


def test_any_counter_above_the_floor_resynchronises():
    """No look-ahead cliff: a counter far beyond the window (an outage's retries) is accepted and
    reported as a jump; the floor follows it, and a used counter is never granted again."""
    f = Fleet()
    did = f.device_ids[0]
    gw = f.gateways[b"gw-a"]
    far = gw.window * 1000
    _, hello_events = gw.receive(did, f.device(did, b"gw-a").hello(far, os.urandom(8)), 0.0)
    assert [(type(e), e.jump) for e in hello_events] == [(gateway.CounterAccepted, far + 1)]
    ev, gw_ev = handshake(f.device(did, b"gw-a"), gw, far + 5)
    assert authenticated(ev) and f.entries[b"gw-a"][did].counter == far + 5
    far += 5
    ev, gw_ev = handshake(f.device(did, b"gw-a"), gw, far - 1)  # below the floor now: never granted
    assert not authenticated(ev) and gw_ev[-1].reason == "clone"
    ev, _ = handshake(f.device(did, b"gw-a"), gw, far + 1)
    assert authenticated(ev)


def test_wrong_firmware_or_key_fails_on_otp():
    f = Fleet()
    did = f.device_ids[0]
    ev, gw_ev = handshake(f.device(did, b"gw-a", fw=os.urandom(32)), f.gateways[b"gw-a"], 1)
    assert ev.reason == "bad_otp" and gw_ev[0].reason == "bad_otp"
    assert f.entries[b"gw-a"][did].counter == -1  # a failed HELLO consumes no counter


def test_device_fails_over_to_another_gateway_with_its_own_counter():
    f = Fleet(gateways=(b"gw-a", b"gw-b"))
    did = f.device_ids[0]
    for c in range(1, 4):
        assert authenticated(handshake(f.device(did, b"gw-a"), f.gateways[b"gw-a"], c)[0])
    # gw-a goes silent; the device turns to gw-b, which has never seen it: no state shared.
    assert authenticated(handshake(f.device(did, b"gw-b"), f.gateways[b"gw-b"], 1)[0])
    assert f.entries[b"gw-a"][did].counter == 3 and f.entries[b"gw-b"][did].counter == 1


def test_pending_handshakes_time_out_and_are_bounded():
    f = Fleet(n_devices=3)
    gw = gateway.GatewayRole(b"gw-a", f.entries[b"gw-a"].get, os.urandom, proof_timeout=2.0, max_pending=2)
    devs = [f.device(d, b"gw-a") for d in f.device_ids]
    r0, _ = gw.receive(devs[0].device_id, devs[0].hello(1, os.urandom(8)), 0.0)
    gw.receive(devs[1].device_id, devs[1].hello(1, os.urandom(8)), 1.0)
    _, ev = gw.receive(devs[2].device_id, devs[2].hello(1, os.urandom(8)), 1.5)
    assert ev[0].reason == "busy" and gw.pending == 2
    late_proof, _ = devs[0].receive(r0, 0.0)
    _, ev = gw.receive(devs[0].device_id, late_proof, 2.5)
    assert ev[0].reason == "timeout"
    assert [e.reason for e in gw.expire(10.0)] == ["timeout"] and gw.pending == 0


def test_device_ignores_strays_and_fails_on_forged_challenge():
    f = Fleet()
    did = f.device_ids[0]
    dev = f.device(did, b"gw-a")
    assert dev.receive(b"\x12" + os.urandom(16), 0.0)[1].reason == "unexpected"  # not in HELLO_SENT
    dev.hello(1, os.urandom(8))
    for junk in (b"", b"\xff", b"\x11" * 21, os.urandom(40)):
        assert isinstance(dev.receive(junk, 0.0)[1], events.Ignored)
    assert dev.state == states.HELLO_SENT
    reply, ev = dev.receive(wire.encode(wire.CHALLENGE, os.urandom(8), os.urandom(8)), 0.0)
    assert reply is None and ev.reason == "bad_gateway_proof" and dev.state == states.FAILED


def test_local_misuse_raises_local_protocol_error():
    f = Fleet()
    dev = f.device(f.device_ids[0], b"gw-a")
    with pytest.raises(LocalProtocolError):
        dev.hello(1, b"short")
    with pytest.raises(LocalProtocolError):
        dev.hello(2**32, os.urandom(8))
    with pytest.raises(LocalProtocolError):
        gateway.GatewayRole(b"gw", dict().get, os.urandom, window=0)


def test_reprs_show_no_key_material():
    f = Fleet()
    did = f.device_ids[0]
    ev, gw_ev = handshake(f.device(did, b"gw-a"), f.gateways[b"gw-a"], 1)
    secret_bits = [f.secrets[did].hex(), ev.session._send_key.hex(), ev.session._recv_key.hex(),
                   f.entries[b"gw-a"][did].k_mac.hex(), f.entries[b"gw-a"][did].k_otp.hex()]
    text = " ".join(repr(x) for x in (ev, gw_ev, ev.session, f.entries[b"gw-a"][did], f.gateways[b"gw-a"],
                                      f.device(did, b"gw-a")))
    assert did.hex() in text
    for s in secret_bits:
        assert s not in text and s[:16] not in text
