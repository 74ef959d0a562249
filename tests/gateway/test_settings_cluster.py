"""Settings for clustered brokers: enforcement.mode = "http", peers, management API, broker alternates."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import BrokerSettings, EnforcementSettings, SettingsError, load_settings


def test_http_mode_with_peers_and_management(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        'gateway_id = "gw-a"\nstate_dir = "/tmp/s"\nkey_file = "/tmp/k"\n'
        '[broker]\nalternates = "127.0.0.1:1884, node3:1885"\n'
        '[enforcement]\nmode = "http"\nhttp_port = 9465\nhttp_shared_port = 9470\n'
        'http_peers = "gw-b=http://10.0.0.2:9465/auth"\n'
        'management_urls = "http://127.0.0.1:15672"\nmanagement_user = "admin"\n'
        'management_password_file = "/tmp/m"\ngateway_accounts = "broker"\n'
    )
    s = load_settings(config, env={})
    assert s.enforcement.mode == "http" and s.enforcement.http_shared_port == 9470
    assert s.enforcement.gateway_accounts == "broker"
    assert s.enforcement.peers() == {"gw-b": "http://10.0.0.2:9465/auth"}
    assert s.broker.addresses() == [("127.0.0.1", 1883), ("127.0.0.1", 1884), ("node3", 1885)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "kafka"}, "enforcement.mode"),
        ({"mode": "http", "http_port": 70000}, "http_port"),
        ({"mode": "http", "http_peers": "gw-b"}, "http_peers"),
        ({"mode": "http", "http_peers": "GW=http://x"}, "http_peers"),
        ({"mode": "http", "http_peers": "gw-b=ftp://x"}, "http_peers"),
        ({"mode": "http", "management_urls": "http://x"}, "management_user"),
        ({"mode": "http", "gateway_accounts": "ldap"}, "gateway_accounts"),
        ({"mode": "http", "gateway_accounts": "broker"}, "needs enforcement.management_urls"),
    ],
)
def test_bad_http_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        EnforcementSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("alternates", ["node3", "node3:", ":1883", "node3:99999", "node3:x"])
def test_bad_alternates_are_refused(alternates: str) -> None:
    with pytest.raises(SettingsError, match="alternates"):
        BrokerSettings(alternates=alternates)


def test_check_config_opens_the_management_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    for name in ("gw.key", "broker.password"):
        (tmp_path / name).write_bytes(b"x" * 32)
        (tmp_path / name).chmod(0o600)
    management = tmp_path / "management.password"
    config = tmp_path / "gw.toml"
    config.write_text(
        f'gateway_id = "gw-a"\nstate_dir = "{tmp_path / "state"}"\nkey_file = "{tmp_path / "gw.key"}"\n'
        f'[broker]\npassword_file = "{tmp_path / "broker.password"}"\n'
        '[enforcement]\nmode = "http"\nmanagement_urls = "http://127.0.0.1:15672"\n'
        f'management_user = "admin"\nmanagement_password_file = "{management}"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 2  # missing
    assert f"enforcement.management_password_file: cannot read file {management}" in capsys.readouterr().err
    management.write_text("s3cret-management-password")
    management.chmod(0o640)
    assert main(["check-config", "--config", str(config)]) == 2  # readable by the group
    err = capsys.readouterr().err
    assert "enforcement.management_password_file: " in err and "chmod 600" in err
    assert "s3cret" not in err
    management.chmod(0o600)
    main(["check-config", "--config", str(config), "--offline"])
    assert "management_password_file" not in capsys.readouterr().err
