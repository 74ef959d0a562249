"""The CPython agent against a real Mosquitto and a GatewayRole responder on the protocol topics."""

from __future__ import annotations

import os
import queue
import socket
import threading

import pytest

from device_agent.agent.counters import read_epoch
from firmware_sim.responder import Responder, entry_for

from .helpers import Device, running, wait_until

pytestmark = pytest.mark.broker


def test_handshake_data_commands_and_reauth(broker, tmp_path):
    dev = Device(tmp_path)
    commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
    agent = dev.agent(dev.config(broker), on_command=lambda n, p: commands.put((n, p)))
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw, running(agent):
        wait_until(lambda: agent.snapshot().gateway == "gw-a", what="authentication")
        assert gw.authentications == 1
        sock = agent._client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

        agent.publish("telemetry", b'{"t": 21.5}')
        assert gw.next_verified() == (dev.device_hex, "telemetry", b'{"t": 21.5}')

        # A forged command (right topic and shape, wrong tag) is dropped and counted.
        forged = b"\x16" + (1).to_bytes(4, "big") + b"open-valve" + os.urandom(8)
        gw.send_raw_command(dev.device_hex, "actuate", forged)
        wait_until(lambda: agent.snapshot().stats.get("commands_dropped_forged") == 1, what="forged drop")
        assert commands.empty()

        gw.send_command(dev.device_hex, "config", b"interval=10")
        assert commands.get(timeout=5) == ("config", b"interval=10")

        # The gateway asks for re-authentication: a second handshake, then data under the new session.
        gw.send_command(dev.device_hex, "reauth", b"")
        wait_until(lambda: agent.snapshot().stats.get("authenticated") == 2, what="re-authentication")
        assert gw.authentications == 2
        agent.publish("telemetry", b"after-reauth")
        assert gw.next_verified() == (dev.device_hex, "telemetry", b"after-reauth")
        assert gw.data_refused == []
        stats = agent.snapshot().stats
        assert stats["commands_ok"] == 2 and stats["hellos"] == 2


def test_failover_to_second_gateway_when_first_is_silent(broker, tmp_path):
    dev = Device(tmp_path, serial="SN-2", gateways=("gw-a", "gw-b"))
    agent = dev.agent(dev.config(broker, answer_timeout_s=0.5))
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-b", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", silent=True) as silent, \
            Responder(broker.host, broker.port, "gw-b", entries) as gw_b, running(agent):
        wait_until(lambda: agent.snapshot().gateway == "gw-b", what="failover to gw-b")
        assert silent.hellos == 1
        assert agent.snapshot().stats["failed_timeout"] == 1
        agent.publish("telemetry", b"via-b")
        assert gw_b.next_verified() == (dev.device_hex, "telemetry", b"via-b")


def test_stale_epoch_hint_is_retried_and_committed_after_success(broker, tmp_path):
    dev = Device(tmp_path, serial="SN-3")
    config = dev.config(broker)
    agent = dev.agent(config)
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw, epoch=3)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw, running(agent):
        wait_until(lambda: agent.snapshot().gateway == "gw-a", what="authentication under epoch 3")
        assert agent.snapshot().epoch == 3 and agent.snapshot().stats["epoch_hints"] == 1
        assert gw.authentications == 1
    assert read_epoch(config.state_file) == 3


def test_counters_survive_an_agent_restart(broker, tmp_path):
    dev = Device(tmp_path, serial="SN-4")
    config = dev.config(broker, counter_block=4)
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw:
        for round_ in range(1, 4):
            agent = dev.agent(config)
            with running(agent):
                wait_until(lambda: agent.snapshot().gateway == "gw-a", what=f"authentication {round_}")
            assert gw.authentications == round_
        # Each restart skipped the rest of its reserved block: counters 0, 4, 8; never a replay.
        assert entries[dev.device_id].counter == 8
        assert not [e for e in gw.events if type(e).__name__ == "Rejected"]


def test_reconnects_after_broker_restart_and_keeps_the_session(broker, tmp_path):
    dev = Device(tmp_path, serial="SN-5")
    agent = dev.agent(dev.config(broker))
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw, running(agent):
        wait_until(lambda: agent.snapshot().gateway == "gw-a", what="authentication")
        broker.restart()
        wait_until(lambda: agent.snapshot().connects == 2, timeout=10, what="reconnect")
        # Same session after the reconnect (no new handshake): the responder (back after paho's own
        # reconnect) verifies data under it.
        for _ in range(50):
            agent.publish("telemetry", b"after-restart")
            try:
                assert gw.next_verified(timeout=0.2) == (dev.device_hex, "telemetry", b"after-restart")
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("no verified data after the broker restart")
        assert agent.snapshot().stats["authenticated"] == 1 and gw.authentications == 1


def test_cli_runs_as_a_service_and_never_logs_the_secret(broker, tmp_path):
    import signal
    import subprocess
    import sys

    dev = Device(tmp_path, serial="SN-6")
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    env = {**os.environ, "DIAMS_BROKER_HOST": broker.host, "DIAMS_BROKER_PORT": str(broker.port)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw:
        proc = subprocess.Popen([sys.executable, "-m", "device_agent.agent.cli", "-v", "run", "--config",
                                 str(dev.prov.config_file)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            wait_until(lambda: gw.authentications == 1, timeout=10, what="CLI agent authentication")
            # the RESULT has left the gateway; stop only once the agent has taken it in
            wait_until(lambda: any("authenticated with gw-a" in line for line in lines), timeout=10,
                       what="the agent's own log of the authentication")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            reader.join(10)
            proc.stdout.close()
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "authenticated with gw-a" in out
    from device_agent.core import keys
    passwords = [keys.broker_password(dev.secret, dev.device_id, e) for e in range(3)]
    for secret_text in (dev.secret.hex(), *passwords):
        assert secret_text not in out


def test_streams_publish_their_source_file_once_authenticated(broker, tmp_path):
    import dataclasses

    from device_agent.agent.config import StreamConfig

    dev = Device(tmp_path, serial="SN-7")
    source = tmp_path / "temp"
    source.write_text("42123\n")
    config = dataclasses.replace(dev.config(broker), streams=(
        StreamConfig(name="temperature", source=source, interval_s=0.2),))
    agent = dev.agent(config)
    entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
    with Responder(broker.host, broker.port, "gw-a", entries) as gw, running(agent):
        assert gw.next_verified() == (dev.device_hex, "temperature", b"42123")
        source.write_text("43000\n")
        while (got := gw.next_verified())[2] == b"42123":
            pass
        assert got == (dev.device_hex, "temperature", b"43000")
    assert agent.snapshot().stats.get("data_unsent", 0) == 0
