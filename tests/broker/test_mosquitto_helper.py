"""The MosquittoBroker test helper itself, and the package's public surface."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time

import pytest

import gateway.broker
from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from gateway.broker import BrokerSecret, CutOff, Enroll, Grant, sighup_reloader
from tests.broker.clients import Probe
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require


@pytest.mark.broker
def test_broker_starts_restarts_on_the_same_port_and_reloads(broker: MosquittoBroker) -> None:
    probe = Probe(broker, "anyone", "whatever")
    assert probe.connect() == 0
    port = broker.port
    broker.restart()
    assert broker.port == port and broker.running
    assert probe.disconnected.wait(5)
    probe.client.loop_stop()
    assert Probe(broker, "anyone", "whatever").connect() == 0
    broker.reload()
    broker.wait_for_log("Reloading config.")
    assert "set_tcp_nodelay true" in broker.config_text()
    assert "max_queued_messages 1000000" in broker.config_text()
    if broker.file_group is not None:  # running as root: the broker runs as 'mosquitto'
        assert stat.S_IMODE(os.stat(broker.conf_path).st_mode) == 0o640


@pytest.mark.broker
def test_broker_kill_and_cleanup() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    with MosquittoBroker() as broker:
        pid, directory = broker.pid, broker.directory
        broker.kill()
        assert not broker.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((broker.host, broker.port), timeout=1).close()
        broker.start()
        assert broker.pid != pid
    assert not directory.exists()


@pytest.mark.broker
def test_sighup_reloader_reads_a_pid_file(broker: MosquittoBroker) -> None:
    pid_file = broker.directory / "broker.pid"
    pid_file.write_text(f"{broker.pid}\n")
    sighup_reloader(pid_file)()
    broker.wait_for_log("Reloading config.")


@pytest.mark.broker
@pytest.mark.asyncio
async def test_cut_off_within_one_second_with_10k_devices_enrolled() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="patterns", min_reload_interval=1.0,
                                       urgent_reload_interval=0.5) as env:
        secret = BrokerSecret.generate()
        ids = [f"{i:016x}" for i in range(1, 10_001)]
        await env.enforcer.apply(c for d in ids for c in (Enroll(device_id=d, secret=secret),
                                                          Grant(device_id=d, streams=frozenset({"t"}))))
        probes = [Probe(env.broker, d, secret.reveal()) for d in ids[:20]]
        for p in probes:
            assert p.connect() == 0
        await env.enforcer.enroll("ffffffffffffffff", secret)  # a reload just happened: worst case
        started = time.monotonic()
        await env.enforcer.apply([CutOff(device_id=d) for d in ids[:10]])
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"cut-off took {elapsed:.3f} s"
        for p in probes[:10]:
            assert await asyncio.to_thread(p.disconnected.wait, 3.0)
        assert not any(p.disconnected.is_set() for p in probes[10:])
        for p in probes:
            p.close()


def test_all_matches_the_public_names() -> None:
    public = {n for n in dir(gateway.broker) if not n.startswith("_") and n != "annotations"}
    assert set(gateway.broker.__all__) == public


@pytest.mark.broker
def test_a_broker_asked_for_a_directory_its_user_cannot_reach_still_enforces(tmp_path) -> None:
    """Run as root, mosquitto drops to its own user; under a 0700 directory (root's home, ``mktemp -d``,
    pytest's tmp_path) it could not read the password file it is pointed at. The files move to a
    directory it can reach, a symlink stands at the requested place, and cleanup copies the log back."""
    require(mosquitto_binary() is not None, "mosquitto")
    from firmware_sim.broker import _broker_user, traversable_by

    user = _broker_user()
    # Not root (or no user mosquitto): the broker keeps our identity and reaches any directory, so there
    # is nothing to prove; in CI (root, Debian's package) that would be a setup fault: a failure.
    require(user is not None, "root and the mosquitto user (the broker drops privileges to it)")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert not traversable_by(private / "x", *user)
    requested = private / "site" / "broker"
    broker = MosquittoBroker(requested)
    secret = BrokerSecret.generate()
    from firmware_sim.site import enforce_on

    enforcer = enforce_on(broker)
    enforcer.stage([Enroll(device_id="0123456789abcdef", secret=secret)])
    enforcer.write_files()
    with broker:
        assert broker.requested_directory == requested and requested.is_symlink()
        assert traversable_by(broker.directory, *user)
        assert Probe(broker, "0123456789abcdef", secret.reveal()).connect() == 0
        assert Probe(broker, "0123456789abcdef", "wrong").connect() != 0
    assert not requested.is_symlink() and "mosquitto version" in (requested / "mosquitto.log").read_text()
    assert not broker.directory.exists()
