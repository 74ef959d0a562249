"""The MicroPython agent under the real unix port, against a real Mosquitto and a gateway responder."""

from __future__ import annotations

import json
import os

import pytest

from firmware_sim.agents import Device
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.responder import Responder, entry_for

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

HEAP_TARGET = 16 * 1024


def _results(proc) -> dict:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    merged: dict = {}
    for line in out.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


def test_handshake_data_and_commands_under_micropython(broker, tmp_path):
    dev = Device(tmp_path, serial="MPY-1")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw:
        proc = mpyagent.start(host=broker.host, port=broker.port, device_hex=dev.device_hex,
                              secret=dev.secret, fw=dev.fw, gateways=["gw-a"], state=tmp_path / "mpy.state")
        try:
            for i in range(3):
                assert gw.next_verified(timeout=20) == (dev.device_hex, "telemetry", b'{"n":%d}' % i)
            forged = b"\x16" + (1).to_bytes(4, "big") + b"x" + os.urandom(8)
            gw.send_raw_command(dev.device_hex, "config", forged)
            gw.send_command(dev.device_hex, "config", b"interval=5")
            r = _results(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert r["authenticated"] and r["reauthenticated"] and r["gateway"] == "gw-a"
    assert gw.authentications == 2 and gw.data_refused == []
    assert r["commands"] == [["config", b"interval=5".hex()]]
    assert r["commands_dropped"] == 1 and r["commands_ok"] == 1
    assert r["heap_alloc_total"] <= HEAP_TARGET, r
    # Write-ahead: the state file reserved a block before the first HELLO.
    # Write-ahead: a block reserved before the first HELLO (0-15), a new one (1-16) before the measured
    # one, whose script marked the first block used up.
    assert (tmp_path / "mpy.state").read_text().split("\n")[1].split() == ["gw-a", "0", "16"]


def test_failover_and_epoch_hint_under_micropython(broker, tmp_path):
    dev = Device(tmp_path, serial="MPY-2")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-b", dev.fw, epoch=2)}
    with Responder(broker.host, broker.port, "gw-a", silent=True) as silent, \
            Responder(broker.host, broker.port, "gw-b", entries) as gw_b:
        proc = mpyagent.start(host=broker.host, port=broker.port, device_hex=dev.device_hex,
                              secret=dev.secret, fw=dev.fw, gateways=["gw-a", "gw-b"],
                              state=tmp_path / "mpy.state", answer_ms=500, n_data=1)
        try:
            assert gw_b.next_verified(timeout=20)[1:] == ("telemetry", b'{"n":0}')
            gw_b.send_command(dev.device_hex, "config", b"x")
            r = _results(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert r["gateway"] == "gw-b" and r["epoch"] == 2 and silent.hellos == 1
    assert (tmp_path / "mpy.state").read_text().split("\n")[0] == "2"


def test_run_loop_reauthenticates_on_command_under_micropython(broker, tmp_path):
    """Agent.run() (what examples/main.py calls): readings flow, a reauth COMMAND starts a new session."""
    import subprocess

    dev = Device(tmp_path, serial="MPY-3")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    dirs = [str(mpyagent.compiled()), str(mpyagent.REPO), str(mpyagent.VENDOR), ".frozen"]
    env = {**os.environ, "MICROPYPATH": ":".join(dirs)}
    script = mpyagent.SCRIPT.parent / "run_loop.py"
    with Responder(broker.host, broker.port, "gw-a", entries) as gw:
        proc = subprocess.Popen(
            [mpyagent.runner.MICROPYTHON, "-X", f"heapsize={mpyagent.HEAP}", str(script), broker.host,
             str(broker.port),
             dev.device_hex, dev.secret.hex(), dev.fw.hex(), "gw-a", str(tmp_path / "st"), "200", "6"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert gw.next_verified(timeout=20)[2] == b"r1"
            gw.send_command(dev.device_hex, "reauth", b"")
            readings = [gw.next_verified(timeout=10)[2] for _ in range(5)]
            r = _results(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert readings == [b"r2", b"r3", b"r4", b"r5", b"r6"]
    assert r == {"authenticated": 2, "hellos": 2, "commands_ok": 1, "no_session_signals": 0}
    assert gw.authentications == 2


def test_no_session_signal_makes_the_agent_reauthenticate_under_micropython(broker, tmp_path):
    """The gateway lost the session (a restart, a lifted quarantine): the agent's data get the no-session
    REJECT, and the agent, under the real MicroPython, re-authenticates instead of sending into the void."""
    import subprocess

    dev = Device(tmp_path, serial="MPY-4")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    dirs = [str(mpyagent.compiled()), str(mpyagent.REPO), str(mpyagent.VENDOR), ".frozen"]
    env = {**os.environ, "MICROPYPATH": ":".join(dirs)}
    script = mpyagent.SCRIPT.parent / "run_loop.py"
    with Responder(broker.host, broker.port, "gw-a", entries) as gw:
        proc = subprocess.Popen(
            [mpyagent.runner.MICROPYTHON, "-X", f"heapsize={mpyagent.HEAP}", str(script), broker.host,
             str(broker.port), dev.device_hex, dev.secret.hex(), dev.fw.hex(), "gw-a", str(tmp_path / "st"),
             "300", "14", "1"],  # a reading every 0.3 s; 14 readings; min_reauth 1 s (default 10)
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert gw.next_verified(timeout=20)[2] == b"r1"
            gw.forget(dev.device_hex)
            after = [gw.next_verified(timeout=10)[2] for _ in range(3)]  # verified again: a new session
            r = _results(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert gw.no_session_signals >= 1 and r["no_session_signals"] >= 1
    assert r["authenticated"] == 2 and gw.authentications == 2, (r, gw.authentications)
    lost = int(after[0][1:]) - 2  # readings sent under the forgotten session, before the new one
    print(f"MicroPython agent: data verified again from {after[0]!r}; {lost} readings lost meanwhile")
    assert after == [after[0], b"r%d" % (int(after[0][1:]) + 1), b"r%d" % (int(after[0][1:]) + 2)]


def test_a_refused_login_probes_the_next_epochs_then_waits_the_long_backoff_under_micropython(tmp_path):
    """The rule is the core policy's (AgentPolicy.login_refused), so the MicroPython agent follows it
    like the paho agent: P of the next epochs at once, then U(0, backoff_cap) before the next dial,
    not the (here 1 ms) reconnect backoff. The policy's random source is pinned to the window's top."""
    from firmware_sim.broker import MosquittoBroker
    from firmware_sim.mpy import runner

    dev = Device(tmp_path, serial="MPY-REFUSED")
    broker = MosquittoBroker()
    passwords = broker.write_file("passwords", "")  # nobody may log in
    broker.extra_config += ["allow_anonymous false", f"password_file {passwords}"]
    with broker:
        proc = runner.run("refused_login.py", broker.host, str(broker.port), dev.device_hex, dev.secret.hex(),
                          dev.fw.hex(), str(tmp_path / "mpy.state"), heap=mpyagent.HEAP,
                          path=[mpyagent.compiled(), runner.REPO, mpyagent.VENDOR], timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = runner.json_lines(proc.stdout)
    assert got["refused"] and got["login_refused"] == 5 and got["probes"] == 4 and got["login_epoch"] == 0
    assert 590 <= got["next_dial_in"] <= 600  # U(0, min(15 * 600, 600 * 2^0)) at the top of the window
