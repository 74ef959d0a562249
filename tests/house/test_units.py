"""Configuration errors exit 2 in every CLI, and no systemd unit restarts on exit 2 (a bad file is
reported once, not restarted in a loop)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_a_restarting_unit_does_not_restart_on_a_configuration_error(unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    if service.get("Restart", "no") != "no":
        assert "2" in service.get("RestartPreventExitStatus", "").split(), unit.name


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_a_unit_names_no_web_address(unit):
    """The project has no published address: a URL in a unit would be invented (one was)."""
    assert "http://" not in unit.read_text() and "https://" not in unit.read_text(), unit.name


def test_every_cli_exits_2_on_a_configuration_error(tmp_path):
    from device_agent.agent.cli import main as agent
    from gateway.cli import main as gateway

    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-a"\nstate_dir = "/x"\nkey_file = "/k"\n[broker]\nprot = 1\n')
    assert gateway(["check-config", "--config", str(bad)]) == 2
    assert gateway(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert agent(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    bad.write_text("[device]\nid = 1\n")
    assert agent(["run", "--config", str(bad)]) == 2
