"""The agent's configuration, read by the loader the gateway uses (device_agent.settings): unknown keys
refused, every value typed, the key named in every error, missing files reported, exit 2 from the CLI."""

from __future__ import annotations

import pytest

from device_agent.agent import cli
from device_agent.agent.config import ConfigError, load_config
from device_agent.settings import SettingsError
from firmware_sim.agents import Device


@pytest.fixture
def provisioned(tmp_path):
    return Device(tmp_path)


def _with(dev: Device, tmp_path, old: str, new: str):
    text = dev.prov.config_file.read_text()
    assert old in text
    path = tmp_path / "edited.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_provisioned_config_loads(provisioned):
    config = load_config(provisioned.prov.config_file, environ={})
    assert config.device_id == provisioned.device_hex and config.gateways == ("gw-a",)
    assert config.firmware_hash == provisioned.fw


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[broker]", "[broker]\nprot = 1884", "unknown setting broker.prot (did you mean broker.port?)"),
        ("[broker]", "[brokr]", "unknown setting brokr (did you mean broker?)"),
        ("port = 1883", 'port = "1884"', "broker.port must be an integer, got '1884'"),
        ("[broker]", "[broker]\nkeepalive_s = 2", "broker.keepalive_s must be >= 5, got 2"),
        ('ids = ["gw-a"]', 'ids = ["GW A"]', "gateways.ids: 'GW A' must be 1-32 of [a-z0-9-]"),
        ('ids = ["gw-a"]', "ids = []", "gateways.ids needs at least one gateway id"),
        ('ids = ["gw-a"]', 'ids = "gw-a"', "gateways.ids must be a list, got 'gw-a'"),
        ("epoch = 0", "epoch = -1", "device.epoch must be 0..2**32-1, got -1"),
        ("epoch = 0", "epoch = 0.5", "device.epoch must be an integer, got 0.5"),
        ("[device]", "[device]\ncolour = 1", "unknown setting device.colour"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(provisioned, tmp_path, old, new, message):
    with pytest.raises(ConfigError) as info:
        load_config(_with(provisioned, tmp_path, old, new), environ={})
    assert message in str(info.value)


def test_config_errors_are_the_shared_settings_error(provisioned, tmp_path):
    assert ConfigError is SettingsError
    with pytest.raises(SettingsError, match=r"cannot read .*nope\.toml: No such file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_a_missing_firmware_file_is_a_config_error_and_exit_2(provisioned, tmp_path, capsys):
    text = provisioned.prov.config_file.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(("firmware_hash", "firmware_file"))]
    path = tmp_path / "fw.toml"
    path.write_text("\n".join(lines).replace("[device]", '[device]\nfirmware_file = "missing.bin"', 1) + "\n")
    with pytest.raises(ConfigError, match=r"device\.firmware_file: cannot read .*missing\.bin"):
        load_config(path, environ={})
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "device.firmware_file" in capsys.readouterr().err


def test_environment_overrides_are_typed_and_named(provisioned):
    config = load_config(provisioned.prov.config_file, environ={"DIAMS_BROKER_PORT": "1999"})
    assert config.broker_port == 1999
    with pytest.raises(ConfigError, match=r"broker\.port must be an integer, got 'x'"):
        load_config(provisioned.prov.config_file, environ={"DIAMS_BROKER_PORT": "x"})


def test_stream_tables_are_checked_too(provisioned, tmp_path):
    provisioned_text = provisioned.prov.config_file.read_text()
    assert len(load_config(provisioned.prov.config_file, environ={}).streams) == 1  # provision's example
    base = provisioned_text.split("[[streams]]")[0]
    path = tmp_path / "streams.toml"
    path.write_text(base + '\n[[streams]]\nname = "telemetry"\nintervl_s = 3\n')
    with pytest.raises(ConfigError, match=r"unknown setting streams\[0\]\.intervl_s"):
        load_config(path, environ={})
    path.write_text(base + '\n[[streams]]\nname = "telemetry"\nsource = "t.txt"\ninterval_s = 3\n')
    (stream,) = load_config(path, environ={}).streams
    assert stream.source == tmp_path / "t.txt" and stream.interval_s == 3.0
