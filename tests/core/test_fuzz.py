"""Fuzzing the codec and both roles: no input makes anything but a defined event come out.

Three layers: every decoder in wire.py on arbitrary input raises RemoteProtocolError or nothing;
every encoder/decoder pair round-trips and decoding is canonical (one encoding per value); valid
messages mutated (bit flips, overwrites, truncation, extension, type relabelling) are fed to both
roles in every state and to a Session, and never authenticate anything. Atheris, when installed,
runs a short coverage-guided pass over the same decoders in a subprocess.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.core import events, gateway, states, wire
from device_agent.core.device import DeviceRole
from device_agent.core.errors import REASONS, RemoteProtocolError
from device_agent.core.keys import gateway_key
from tests.conftest import require

FUZZ = settings(max_examples=1000, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DECODERS = {
    "message_type": wire.message_type,
    "decode_hello": lambda b: wire.decode(b, wire.HELLO),
    "decode_challenge": lambda b: wire.decode(b, wire.CHALLENGE),
    "decode_proof": lambda b: wire.decode(b, wire.PROOF),
    "decode_result": lambda b: wire.decode(b, wire.RESULT),
    "decode_reject": lambda b: wire.decode(b, wire.REJECT),
    "decode_data": lambda b: wire.decode_sealed(b, wire.DATA),
    "decode_command": lambda b: wire.decode_sealed(b, wire.COMMAND),
}

# Bytes that get past the header check often: a valid header, then a body near the fixed lengths.
NEAR_VALID = st.builds(lambda t, body: bytes((wire.header(t),)) + body,
                       st.integers(0, 15), st.binary(max_size=wire.HELLO_LEN + 2))
# Sealed messages around the size limit, built cheaply (drawing 16 KB of random bytes is slow).
LIMIT = wire.MAX_PAYLOAD + wire.SEALED_OVERHEAD
OVERSIZE = st.builds(lambda t, n, fill: bytes((wire.header(t),)) + bytes((fill,)) * n,
                     st.sampled_from((wire.DATA, wire.COMMAND)), st.integers(LIMIT - 3, LIMIT + 2),
                     st.integers(0, 255))
ANY_BYTES = st.one_of(st.binary(max_size=64), NEAR_VALID, OVERSIZE)
NOT_BYTES = st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(0, 255)))


def _decodes(decoder, data):
    try:
        decoder(data)
    except RemoteProtocolError as exc:
        assert exc.reason == "bad_message"
        return False
    return True


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(FUZZ, max_examples=500)
@given(data=ANY_BYTES)
def test_decoders_raise_only_remote_protocol_error(name, data):
    decoder = DECODERS[name]
    for form in (data, bytearray(data), memoryview(data)):
        _decodes(decoder, form)


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(FUZZ, max_examples=200)
@given(data=NOT_BYTES)
def test_decoders_refuse_what_is_not_bytes(name, data):
    assert not _decodes(DECODERS[name], data)


U32 = st.integers(0, 0xFFFFFFFF)
B8 = st.binary(min_size=8, max_size=8)


@settings(FUZZ, max_examples=300)
@given(epoch=U32, counter=U32, nonce=B8, otp=st.binary(min_size=4, max_size=4))
def test_hello_round_trip(epoch, counter, nonce, otp):
    b = wire.encode(wire.HELLO, epoch, counter, nonce, otp)
    assert len(b) == wire.HELLO_LEN and wire.message_type(b) == wire.HELLO
    assert wire.decode(b, wire.HELLO) == (epoch, counter, nonce, otp)


@settings(FUZZ, max_examples=300)
@given(nonce=B8, tag=B8)
def test_challenge_and_proof_round_trip(nonce, tag):
    b = wire.encode(wire.CHALLENGE, nonce, tag)
    assert len(b) == wire.CHALLENGE_LEN and wire.decode(b, wire.CHALLENGE) == (nonce, tag)
    p = wire.encode(wire.PROOF, tag)
    assert len(p) == wire.PROOF_LEN and wire.decode(p, wire.PROOF) == (tag,)


@settings(FUZZ, max_examples=300)
@given(status=st.integers(0, 255), lifetime=U32, tag=B8, reason=st.integers(0, 255), epoch=U32)
def test_result_and_reject_round_trip(status, lifetime, tag, reason, epoch):
    b = wire.encode(wire.RESULT, status, lifetime, tag)
    assert wire.decode(b, wire.RESULT) == (status, lifetime, tag)
    assert b[:-8] == wire.result_body(status, lifetime)
    r = wire.encode(wire.REJECT, reason, epoch)
    assert len(r) == wire.REJECT_LEN and wire.decode(r, wire.REJECT) == (reason, epoch)


@settings(FUZZ, max_examples=300)
@given(mtype=st.sampled_from((wire.DATA, wire.COMMAND)), seq=U32, payload=st.binary(max_size=300), tag=B8)
def test_sealed_round_trip(mtype, seq, payload, tag):
    b = wire.sealed_body(mtype, seq, payload) + tag
    assert b == wire.sealed_body(mtype, seq, payload) + tag
    assert wire.decode_sealed(b, mtype) == (seq, payload, tag)
    assert not _decodes(DECODERS["decode_command" if mtype == wire.DATA else "decode_data"], b)


ENCODERS = {
    "decode_hello": lambda v: wire.encode(wire.HELLO, *v),
    "decode_challenge": lambda v: wire.encode(wire.CHALLENGE, *v),
    "decode_proof": lambda v: wire.encode(wire.PROOF, *v),
    "decode_result": lambda v: wire.encode(wire.RESULT, *v),
    "decode_reject": lambda v: wire.encode(wire.REJECT, *v),
    "decode_data": lambda v: wire.sealed_body(wire.DATA, *v[:2]) + v[2],
    "decode_command": lambda v: wire.sealed_body(wire.COMMAND, *v[:2]) + v[2],
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
@settings(FUZZ, max_examples=500)
@given(data=st.one_of(NEAR_VALID, st.binary(max_size=40)))
def test_decoding_is_canonical(name, data):
    """Whatever decodes re-encodes to the very same bytes: no two encodings of one value."""
    try:
        value = DECODERS[name](data)
    except RemoteProtocolError:
        return
    assert ENCODERS[name](value) == bytes(data)


# -- mutated messages against both roles, in every state ----------------------------------------

SECRET = bytes(range(32))
DID = bytes(range(8))
FW = bytes(32)
GW = b"gw-fuzz"
EPOCH = 1
KDG = gateway_key(SECRET, DID, GW, EPOCH, FW)


class Handshake:
    """One complete handshake's messages, with the roles left in the state the test asks for."""

    def __init__(self):
        self.entry = gateway.DeviceEntry(DID, KDG, EPOCH, lifetime=100)
        self.gw = gateway.GatewayRole(GW, {DID: self.entry}.get, os.urandom, proof_timeout=5.0)
        self.dev = DeviceRole(DID, GW, KDG, EPOCH)
        m = self.msgs = {}
        m["hello"] = self.dev.hello(7, os.urandom(8))
        m["challenge"], _ = self.gw.receive(DID, m["hello"], 0.0)
        m["proof"], _ = self.dev.receive(m["challenge"], 0.0)
        m["result"], ev = self.gw.receive(DID, m["proof"], 0.0)
        _, done = self.dev.receive(m["result"], 0.0)
        self.up, self.down = done.session, ev[0].session
        m["data"] = self.up.seal(b"telemetry", b"21.5")
        m["command"] = self.down.seal(b"config", b"interval=60")
        m["reject"] = wire.encode(wire.REJECT, 5, EPOCH)

    def device_in(self, state):
        """A device in ``state``; from HELLO_SENT on, the unmutated messages above would verify."""
        dev = DeviceRole(DID, GW, KDG, EPOCH)
        if state != states.IDLE:
            dev.hello(7, self.msgs["hello"][9:17])
        if state == states.PROOF_SENT:
            dev.receive(self.msgs["challenge"], 0.0)
        elif state == states.AUTHENTICATED:
            dev.receive(self.msgs["challenge"], 0.0)
            dev.receive(self.msgs["result"], 0.0)
        elif state == states.FAILED:
            dev.timeout()
        assert dev.state == state
        return dev

    def gateway_in(self, state):
        """A gateway idle, or awaiting the PROOF above for a fresh counter or for a clone probe."""
        entry = gateway.DeviceEntry(DID, KDG, EPOCH, counter=7 if state == "probe" else -1, lifetime=100)
        g_nonce = self.msgs["challenge"][1:9]
        gw = gateway.GatewayRole(GW, {DID: entry}.get, lambda n: g_nonce, proof_timeout=5.0)
        if state != "none":
            reply, _ = gw.receive(DID, self.msgs["hello"], 0.0)
            assert reply == self.msgs["challenge"]
        return gw


HS = Handshake()
MUTATION = st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255), st.integers(1, 24))


def mutated(payload, mutation):
    op, pos, val, n = mutation
    b = bytearray(payload)
    i = pos % len(b)
    if op == 0:
        b[i] ^= 1 << (val % 8)
    elif op == 1:
        b[i] = (b[i] + 1 + val % 255) % 256
    elif op == 2:
        del b[i:]
    elif op == 3:
        b += bytes((val,)) * n
    else:
        b[0] = wire.header(1 + val % 7) if b[0] != wire.header(1 + val % 7) else b[0] ^ 0x10
    assert bytes(b) != payload
    return bytes(b)


def _defined(ev):
    assert isinstance(ev, events.Rejected | events.Ignored | gateway.CounterAccepted | gateway.CloneDetected
                      | events.Authenticated), ev
    if isinstance(ev, events.Rejected | events.Ignored):
        assert ev.reason in REASONS or ev.reason == "challenge_ok"


@FUZZ
@given(name=st.sampled_from(sorted(HS.msgs)), mutation=MUTATION,
       state=st.sampled_from((states.IDLE, states.HELLO_SENT, states.PROOF_SENT, states.AUTHENTICATED,
                              states.FAILED)))
def test_mutated_messages_at_the_device(name, mutation, state):
    dev = HS.device_in(state)
    before = dev.session
    reply, ev = dev.receive(mutated(HS.msgs[name], mutation), 1.0)
    _defined(ev)
    assert not isinstance(ev, events.Authenticated | gateway.CounterAccepted | gateway.CloneDetected)
    assert reply is None  # no mutated CHALLENGE is answered
    assert dev.session is before and dev.state in (state, states.FAILED)


@FUZZ
@given(name=st.sampled_from(sorted(HS.msgs)), mutation=MUTATION,
       state=st.sampled_from(("none", "await_proof", "probe")), device_id=st.sampled_from((DID, bytes(8))))
def test_mutated_messages_at_the_gateway(name, mutation, state, device_id):
    gw = HS.gateway_in(state)
    payload = mutated(HS.msgs[name], mutation)
    reply, evs = gw.receive(device_id, payload, 1.0)
    for ev in evs:
        _defined(ev)
        assert not isinstance(ev, events.Authenticated | gateway.CloneDetected)
    if reply is not None:
        kind = wire.message_type(reply)
        assert kind in (wire.CHALLENGE, wire.REJECT)
        if kind == wire.CHALLENGE:
            # Only a HELLO whose OTP still verifies is challenged: only its nonce may have changed.
            assert device_id == DID
            assert wire.decode(payload, wire.HELLO)[::3] == wire.decode(HS.msgs["hello"], wire.HELLO)[::3]
            assert wire.decode(payload, wire.HELLO)[1] == 7
    for ev in gw.expire(100.0):
        _defined(ev)


@FUZZ
@given(name=st.sampled_from(sorted(HS.msgs)), mutation=MUTATION, stream=st.sampled_from((b"telemetry",
                                                                                           b"config")))
def test_mutated_messages_never_open_a_session(name, mutation, stream):
    payload = mutated(HS.msgs[name], mutation)
    for s in (HS.up, HS.down):
        seq = s.recv_seq
        got, reason = s.open(stream, payload, 1.0)
        assert got is None and reason in ("bad_message", "forged", "replay") and s.recv_seq == seq


@FUZZ
@given(data=ANY_BYTES, now=st.floats(-1e9, 1e9, allow_nan=False))
def test_arbitrary_bytes_at_every_entry_point(data, now):
    for state in (states.IDLE, states.HELLO_SENT, states.AUTHENTICATED):
        _, ev = HS.device_in(state).receive(data, now)
        _defined(ev)
    for state in ("none", "await_proof", "probe"):
        _, evs = HS.gateway_in(state).receive(DID, data, now)
        for ev in evs:
            _defined(ev)
            assert not isinstance(ev, events.Authenticated | gateway.CloneDetected)
    for s in (HS.up, HS.down):
        assert s.open(b"telemetry", data, now)[0] is None


# -- atheris: coverage-guided, bounded ----------------------------------------------------------

ATHERIS_HARNESS = textwrap.dedent("""
    import os, sys
    import atheris
    with atheris.instrument_imports():
        from device_agent.core import gateway, wire
        from device_agent.core.device import DeviceRole
        from device_agent.core.errors import RemoteProtocolError
        from device_agent.core.keys import gateway_key
    KDG = gateway_key(bytes(range(32)), bytes(8), b"gw", 1, bytes(32))
    DECODERS = (wire.message_type, *(lambda b, t=t: wire.decode(b, t) for t in (1, 2, 3, 4, 7)),
                lambda b: wire.decode_sealed(b, wire.DATA))
    GW = gateway.GatewayRole(b"gw", {bytes(8): gateway.DeviceEntry(bytes(8), KDG, 1)}.get, os.urandom)

    def one_input(data):
        for decode in DECODERS:
            try:
                decode(data)
            except RemoteProtocolError:
                pass
        dev = DeviceRole(bytes(8), b"gw", KDG, 1)
        dev.hello(1, bytes(8))
        dev.receive(data, 0.0)
        GW.receive(bytes(8), data, 0.0)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
""")


def test_atheris_bounded_run(tmp_path):
    require(importlib.util.find_spec("atheris") is not None, "atheris (pip install -e '.[dev]')")
    harness = tmp_path / "fuzz_core.py"
    harness.write_text(ATHERIS_HARNESS)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, str(harness), "-runs=20000", "-seed=1", "-max_len=64"],
                          cwd=root, env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 20000 runs" in proc.stderr


@settings(FUZZ, max_examples=200)
@given(data=NOT_BYTES)
def test_what_is_not_bytes_is_refused_at_every_entry_point(data):
    """An adapter bug handing over a str or None still yields a defined event, never an exception."""
    _, ev = HS.device_in(states.HELLO_SENT).receive(data, 1.0)
    assert isinstance(ev, events.Ignored) and ev.reason == "bad_message"
    _, evs = HS.gateway_in("await_proof").receive(DID, data, 1.0)
    assert [e.reason for e in evs] == ["bad_message"]
    assert HS.up.open(b"config", data, 1.0) == (None, "bad_message")
