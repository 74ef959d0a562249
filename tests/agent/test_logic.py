"""Agent logic without a broker: key store, counters, backoff, failover, driver, config, provisioning."""

from __future__ import annotations

import json
import os
import stat

import pytest

from device_agent.agent import cli
from device_agent.agent.config import ConfigError
from device_agent.agent.counters import CounterFile, read_epoch
from device_agent.agent.driver import AgentDriver
from device_agent.agent.keystore import DeviceSecret, KeystoreError, load_secret
from device_agent.agent.provision import CSV_COLUMNS
from device_agent.core import identity, policy, topics
from device_agent.core.gateway import GatewayRole
from firmware_sim.responder import entry_for

from .helpers import Device

# -- key store ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o610])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    dev = Device(tmp_path)
    os.chmod(dev.prov.key_file, mode)
    with pytest.raises(KeystoreError, match="chmod 600") as info:
        load_secret(dev.prov.key_file)
    assert dev.secret.hex() not in str(info.value)


def test_cli_run_refuses_a_world_readable_key(tmp_path, capsys):
    dev = Device(tmp_path)
    os.chmod(dev.prov.key_file, 0o644)
    assert cli.main(["run", "--config", str(dev.prov.config_file)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_secret_never_shows_in_repr_or_str(tmp_path):
    dev = Device(tmp_path)
    s = load_secret(dev.prov.key_file)
    assert s.reveal() == dev.secret
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert dev.secret.hex() not in text and "hidden" in text
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(s)
    with pytest.raises(KeystoreError):
        DeviceSecret(b"short")


# -- provisioning --------------------------------------------------------------------------------


def test_provision_files_modes_and_record(tmp_path):
    dev = Device(tmp_path)
    p = dev.prov
    assert stat.S_IMODE(p.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.owner_file.stat().st_mode) == 0o600
    owner = json.loads(p.owner_file.read_text())
    mac = bytes.fromhex(owner["mac"].replace(":", ""))
    assert identity.derive_device_id(dev.secret, owner["model"], owner["serial"], mac) == dev.device_id
    salt = bytes.fromhex(owner["salt"])
    commitment = identity.characteristics_commitment(salt, owner["model"], owner["serial"], mac, dev.fw)
    assert p.record.characteristics == "0x" + commitment.hex()
    expected_claim = identity.claim_hash(dev.device_id, owner["claim_code"].encode())
    assert p.record.claim_hash == "0x" + expected_claim.hex()
    public = p.record_file.read_text() + p.csv_file.read_text()
    for secret_value in (dev.secret.hex(), owner["claim_code"], owner["salt"]):
        assert secret_value not in public


def test_provision_csv_is_what_the_ledger_imports(tmp_path):
    from ledger_bridge import csv_import
    devs = [Device(tmp_path, serial=f"SN-{i}") for i in range(3)]
    header = devs[0].prov.csv_file.read_text().splitlines()[0]
    assert header.split(",") == list(CSV_COLUMNS)
    good, bad = csv_import.read_rows(devs[0].prov.csv_file)
    assert bad == [] and [r.device_id for _, r in good] == [d.device_id for d in devs]
    assert good[0][1].characteristics.hex() == devs[0].prov.record.characteristics[2:]


def test_cli_provision_prints_the_public_record_only(tmp_path, capsys):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"image")
    rc = cli.main(["provision", "--model", "m1", "--serial", "S1", "--mac", "AA:BB:CC:DD:EE:FF",
                   "--firmware", str(fw), "--out", str(tmp_path / "out")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    owner = json.loads((tmp_path / "out" / f"{out['device_id']}.owner.json").read_text())
    assert owner["secret"] not in json.dumps(out) and set(out) == set(CSV_COLUMNS)


def test_provision_refuses_bad_inputs(tmp_path):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"x")
    for args in (["--mac", "AA:BB"], ["--model", "m" * 33]):
        base = {"--model": "m", "--serial": "s", "--mac": "AA:BB:CC:DD:EE:FF"}
        base.update(dict([args]))
        flags = [x for kv in base.items() for x in kv]
        argv = ["provision", *flags, "--firmware", str(fw), "--out", str(tmp_path)]
        assert cli.main(argv) == 2


def test_config_is_checked_when_loaded(tmp_path):
    dev = Device(tmp_path)
    text = dev.prov.config_file.read_text()
    bad = tmp_path / "bad.toml"
    for old, new in (('ids = ["gw-a"]', 'ids = ["GW A"]'), ('ids = ["gw-a"]', "ids = []"),
                     ("epoch = 0", "epoch = -1"), (f'id = "{dev.device_hex}"', 'id = "xyz"')):
        bad.write_text(text.replace(old, new))
        with pytest.raises(ConfigError):
            from device_agent.agent.config import load_config
            load_config(bad, environ={})


# -- the counter file (the rules are the core's: tests/core/test_policy.py) ----------------------


def test_counter_file_is_0600_durable_and_read_back(tmp_path):
    path = tmp_path / "state"
    f = CounterFile(path)
    assert f.read() is None
    f.write(policy.format_counters(1, {("gw-a", 1): 15}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and f.writes == 1
    assert CounterFile(path).read() == "1\ngw-a 1 15\n" and read_epoch(path) == 1
    path.write_text("1\ngw-a 1\n")
    with pytest.raises(ValueError, match="damaged"):
        CounterFile(path).read()


def test_counter_files_of_earlier_versions_are_read_in_the_one_format(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"epoch": 3, "reserved": {"gw-a/3": 47, "gw-b/3": 15}}))
    assert CounterFile(path).read() == "3\ngw-a 3 47\ngw-b 3 15\n"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        CounterFile(path).read()


# -- driver with an in-memory gateway --------------------------------------------------------------


def _driver(tmp_path, dev, gateways=("gw-a",)):
    return AgentDriver(device_id=dev.device_id, secret=DeviceSecret(dev.secret), firmware_hash=dev.fw,
                       counters=CounterFile(tmp_path / "st"), gateways=gateways, answer_timeout=1.0,
                       reauth_margin=10, backoff_base=1, backoff_cap=1, random=os.urandom)


def _pump(driver, gw_role, outs, now):
    """Deliver the driver's publishes to an in-memory gateway role and the replies back."""
    while outs:
        p = outs.pop(0)
        kind, gateway, device, _ = topics.parse(p.topic)
        if kind != topics.HANDSHAKE:
            continue
        reply, _ = gw_role.receive(bytes.fromhex(device), p.payload, now)
        if reply is not None:
            outs += driver.message(topics.handshake_down(gateway, device), reply, now)


def test_forged_epoch_hint_costs_one_attempt_and_commits_nothing(tmp_path):
    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev)
    entry = entry_for(dev.secret, dev.device_id, "gw-a", dev.fw, epoch=0, lifetime=100)
    role = GatewayRole(b"gw-a", {dev.device_id: entry}.get, os.urandom)
    driver.connected(0.0)
    # An attacker answers first with a REJECT stale_epoch hinting a huge epoch.
    down = topics.handshake_down("gw-a", dev.device_id.hex())
    outs = driver.message(down, b"\x17\x04" + (0xFFFFFF).to_bytes(4, "big"), 0.0)
    assert driver.all_stats()["epoch_hints"] == 1
    _pump(driver, role, outs, 0.0)  # the hinted epoch fails at the real gateway (stale_epoch, lower hint)
    assert driver.all_stats()["failed_stale_epoch"] == 1 and driver.epoch == 0
    _pump(driver, role, driver.tick(1.0), 1.0)  # retried under the committed epoch
    assert driver.authenticated and driver.epoch == 0


def test_reauth_before_expiry_keeps_old_session_until_new_one(tmp_path):
    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev)
    entry = entry_for(dev.secret, dev.device_id, "gw-a", dev.fw, lifetime=100)
    role = GatewayRole(b"gw-a", {dev.device_id: entry}.get, os.urandom)
    _pump(driver, role, driver.connected(0.0), 0.0)
    first = driver.session
    assert driver.next_deadline() == 90.0  # lifetime 100, margin 10
    hello = driver.tick(90.0)
    assert len(hello) == 1 and driver.session is first  # data still flows under the old session
    assert driver.seal("t", b"x", 90.0) is not None
    _pump(driver, role, hello, 90.0)
    assert driver.session is not first and driver.all_stats()["authenticated"] == 2
    assert driver.seal("t", b"x", 500.0) is None  # expired sessions send nothing


def test_sd_notify_reaches_a_notify_socket(tmp_path, monkeypatch):
    import socket

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert cli.sd_notify("READY=1")
        assert server.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not cli.sd_notify("READY=1")


def test_hello_counter_is_on_disk_before_the_hello_is_returned(tmp_path):
    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev, gateways=("gw-a", "gw-b"))
    for now in range(40):
        out = driver.tick(float(now)) if now else driver.connected(0.0)
        hellos = [p for p in out if topics.parse(p.topic)[3] == topics.UP]
        for p in hellos:
            gateway = topics.parse(p.topic)[1]
            counter = int.from_bytes(p.payload[5:9], "big")
            on_disk = policy.parse_counters((tmp_path / "st").read_text())[1][(gateway, 0)]
            assert counter <= on_disk
    assert driver.all_stats()["hellos"] >= 20  # every attempt timed out (1 s): fresh counters each time


def test_gateway_without_a_session_makes_the_driver_reauthenticate_once(tmp_path):
    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev)
    entry = entry_for(dev.secret, dev.device_id, "gw-a", dev.fw, lifetime=1000)
    role = GatewayRole(b"gw-a", {dev.device_id: entry}.get, os.urandom)
    _pump(driver, role, driver.connected(0.0), 0.0)
    assert driver.authenticated
    assert driver.no_session("gw-a", 1.0) == []  # right after a success: a forged signal changes nothing
    hello = driver.no_session("gw-a", 60.0)
    assert [topics.parse(p.topic)[3] for p in hello] == [topics.UP] and not driver.authenticated
    assert driver.no_session("gw-a", 60.1) == []  # a flood while it runs: nothing more
    _pump(driver, role, hello, 60.0)
    assert driver.authenticated and driver.all_stats()["authenticated"] == 2


def test_a_refused_login_schedules_the_next_dial_with_backoff(tmp_path):
    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev)
    driver.start(0.0)
    assert driver.connect_due
    driver.connect_due = False
    password = driver.broker_password()
    for probe in range(1, 5):  # P of the next epochs at once (the device may have missed bumps) ...
        driver.login_refused(0.1)
        assert driver.connect_due and driver.login_epoch == probe and driver.broker_password() != password
        driver.connect_due = False
    driver.login_refused(0.1)  # ... then from the committed epoch again, after a backoff
    assert not driver.connect_due and driver.next_deadline() is not None
    driver.tick(driver.next_deadline() or 0.0)
    assert driver.connect_due and driver.login_epoch == 0 and driver.broker_password() == password
    assert driver.all_stats()["login_refused"] == 5


def test_the_gateways_no_session_signal_on_the_wire_starts_one_handshake_and_never_ends_one(tmp_path):
    """The REJECT(no_session) a restarted gateway sends on the handshake topic reaches the policy's
    no-session event, never the handshake role: a forged one cannot end a handshake in flight."""
    from device_agent.core import wire

    dev = Device(tmp_path)
    driver = _driver(tmp_path, dev)
    entry = entry_for(dev.secret, dev.device_id, "gw-a", dev.fw, lifetime=1000)
    role = GatewayRole(b"gw-a", {dev.device_id: entry}.get, os.urandom)
    signal = wire.encode(wire.REJECT, wire.NO_SESSION, 0)
    down = str(topics.handshake_down("gw-a", driver.device_hex))
    hello = driver.connected(0.0)
    assert driver.message(down, signal, 0.1) == [] and driver.policy.attempt is not None  # not ended
    _pump(driver, role, hello, 0.2)
    assert driver.authenticated
    again = driver.message(down, signal, 60.0)  # the gateway restarted: one new handshake
    assert [topics.parse(p.topic)[3] for p in again] == [topics.UP] and not driver.authenticated
    assert driver.message(down, signal, 60.1) == []
    _pump(driver, role, again, 60.2)
    assert driver.authenticated and driver.all_stats()["no_session_signals"] == 3
