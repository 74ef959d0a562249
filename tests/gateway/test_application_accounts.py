"""``enforcement.applications``: read-only broker accounts for applications, from the gateway's settings
(the broker side is tested on the real Mosquitto in tests/broker/test_least_privilege.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.preflight import ConfigurationError, read_application_password
from gateway.settings import EnforcementSettings, SettingsError

MOSQUITTO = {
    "mode": "mosquitto", "password_file": Path("/p"), "acl_file": Path("/a"), "pid_file": Path("/pid")
}


def test_applications_are_name_equals_password_file() -> None:
    e = EnforcementSettings(**MOSQUITTO, applications=" dash=/etc/diams/dash.password , obs=/x/o ")  # type: ignore[arg-type]
    assert e.application_files() == {"dash": Path("/etc/diams/dash.password"), "obs": Path("/x/o")}
    assert EnforcementSettings(**MOSQUITTO).application_files() == {}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["dash", "=/p", "Dash=/p", "a/b=/p", "dash=", "x" * 33 + "=/p", "dash=/p,dash=/q"]
)
def test_bad_application_entries_are_refused_with_the_key_named(value: str) -> None:
    with pytest.raises(SettingsError, match=r"enforcement\.applications"):
        EnforcementSettings(**MOSQUITTO, applications=value)  # type: ignore[arg-type]


def test_application_accounts_need_the_mosquitto_enforcer() -> None:
    with pytest.raises(SettingsError, match="mode = 'mosquitto'"):
        EnforcementSettings(mode="none", applications="dash=/p")


def test_an_application_password_is_read_like_the_gateways(tmp_path: Path) -> None:
    path = tmp_path / "dash.password"
    path.write_text("s3cret-but-long-enough-0123\n")
    os.chmod(path, 0o600)
    assert read_application_password("dash", path).reveal() == "s3cret-but-long-enough-0123"
    os.chmod(path, 0o640)
    with pytest.raises(ConfigurationError, match=r"enforcement.applications \(dash\).*chmod 600"):
        read_application_password("dash", path)
    path.write_text("short")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError, match="at least 16") as err:
        read_application_password("dash", path)
    assert "short" not in str(err.value)
