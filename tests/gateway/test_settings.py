"""Gateway settings: TOML + environment, validated with messages that name the key and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import GatewaySettings, SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "gateway.example.toml"
MINIMAL = 'gateway_id = "gw-a"\nstate_dir = "/var/lib/diams-gateway"\nkey_file = "/etc/gw.key"\n'


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> GatewaySettings:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings(path, env={} if env is None else env)


def test_the_example_config_is_valid_and_uses_credentials(tmp_path):
    s = load_settings(EXAMPLE, env={"CREDENTIALS_DIRECTORY": "/run/credentials/diams-gateway.service"})
    creds = Path("/run/credentials/diams-gateway.service")
    assert s.key_file == creds / "gateway.key"
    assert s.broker.password_file == creds / "broker.password"
    assert s.ledger.keystore == creds / "ledger.keystore"
    assert s.ledger.passphrase_file == creds / "ledger.passphrase"
    assert s.enforcement.mode == "mosquitto" and s.enforcement.reload_command.startswith("systemctl")
    assert s.defence.clone_quarantine is True and s.http.port == 9464


def test_minimal_config_takes_the_defaults(tmp_path):
    s = _load(tmp_path, MINIMAL)
    assert s.gateway_id == "gw-a" and s.key_file == Path("/etc/gw.key")
    assert s.broker.port == 1883 and s.enforcement.mode == "none" and s.ledger.mode == "rpc"
    # a section that sets one key keeps the same defaults for the others
    s = _load(tmp_path, MINIMAL + "[ledger]\nanchor_interval = 5\n[enforcement]\nrights = 'patterns'\n")
    assert s.ledger.mode == "rpc" and s.ledger.url == "http://127.0.0.1:8545"
    assert s.enforcement.mode == "none" and s.ledger.anchor_interval == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "[broker]\nport = 70000\n", "broker.port must be 1..65535, got 70000"),
        (MINIMAL + "[broker]\nport = 0\n", "broker.port must be 1..65535, got 0"),
        (MINIMAL + '[broker]\nport = "mqtt"\n', "broker.port must be an integer, got 'mqtt'"),
        (MINIMAL + "[broker]\nport = 1883.5\n", "broker.port must be an integer, got 1883.5"),
        (MINIMAL + "[broker]\nprot = 1883\n", "unknown setting broker.prot (did you mean broker.port?)"),
        (MINIMAL + "[brokr]\nport = 1883\n", "unknown setting brokr"),
        (MINIMAL + "broker = 5\n", "[broker] must be a table"),
        (MINIMAL + "colour = 1\n", "unknown setting colour"),
        (MINIMAL.replace("gw-a", "GW_A"), "gateway_id must be 1-32 characters of [a-z0-9-], got 'GW_A'"),
        (MINIMAL.replace("gw-a", "a" * 33), "gateway_id must be 1-32 characters"),
        (MINIMAL.replace("gw-a", "gw/a"), "gateway_id must be 1-32 characters"),
        ('gateway_id = "gw-a"\nstate_dir = "/x"\n', "missing setting key_file"),
        (MINIMAL + '[http]\nport = -1\n', "http.port must be 0..65535, got -1"),
        (
            MINIMAL + '[defence]\nclone_quarantine = "maybe"\n',
            "defence.clone_quarantine must be true or false, got 'maybe'",
        ),
        (MINIMAL + '[ledger]\nmode = "embedded"\n', "ledger.mode = 'embedded' needs ledger.path"),
        (MINIMAL + '[ledger]\nmode = "ipc"\n', "ledger.mode must be 'embedded' or 'rpc', got 'ipc'"),
        (MINIMAL + "[protocol]\nwindow = 0\n", "protocol.window must be 1..100000, got 0"),
        (
            MINIMAL + '[enforcement]\nmode = "mosquitto"\npassword_file = "/p"\nacl_file = "/a"\n',
            "needs enforcement.pid_file or reload_command",
        ),
        (MINIMAL + "[broker\n", "gateway.toml"),
        (MINIMAL.replace('"/etc/gw.key"', '""'), "key_file must not be empty"),
        (MINIMAL + '[broker]\nhost = 127\n', "broker.host must be a string, got 127"),
        (MINIMAL + "[protocol]\nwindow = true\n", "protocol.window must be an integer, got True"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(SettingsError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)


def test_a_missing_file_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match=r"cannot read .*nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml", env={})


def test_environment_overrides_the_file(tmp_path):
    env = {
        "DIAMS_GATEWAY_BROKER_PORT": "1884",
        "DIAMS_GATEWAY_GATEWAY_ID": "gw-b",
        "DIAMS_GATEWAY_DEFENCE_CLONE_QUARANTINE": "off",
        "DIAMS_GATEWAY_LEDGER_ANCHOR_INTERVAL": "12.5",
        "DIAMS_GATEWAY_HTTP_HOST": "::1",
        "UNRELATED": "ignored",
    }
    s = _load(tmp_path, MINIMAL + "[broker]\nport = 1883\nhost = 'mqtt.local'\n", env)
    assert s.broker.port == 1884 and s.broker.host == "mqtt.local"  # the file's other keys stay
    assert s.gateway_id == "gw-b" and s.defence.clone_quarantine is False
    assert s.ledger.anchor_interval == 12.5 and s.http.host == "::1"


def test_environment_alone_is_enough():
    s = load_settings(
        None,
        env={
            "DIAMS_GATEWAY_GATEWAY_ID": "gw-env",
            "DIAMS_GATEWAY_STATE_DIR": "/tmp/gw",
            "DIAMS_GATEWAY_KEY_FILE": "/tmp/gw.key",
        },
    )
    assert s.gateway_id == "gw-env" and s.state_dir == Path("/tmp/gw")


def test_a_bad_environment_override_names_its_key(tmp_path):
    with pytest.raises(SettingsError, match=r"broker\.port must be an integer, got 'x'"):
        _load(tmp_path, MINIMAL, {"DIAMS_GATEWAY_BROKER_PORT": "x"})
    with pytest.raises(SettingsError, match=r"unknown setting broker\.nope"):
        _load(tmp_path, MINIMAL, {"DIAMS_GATEWAY_BROKER_NOPE": "1"})


def test_credentials_resolve_in_the_credentials_directory(tmp_path):
    text = MINIMAL.replace('"/etc/gw.key"', '"credential:gateway.key"') + (
        '[broker]\npassword_file = "credential:broker.password"\n'
    )
    s = _load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert s.key_file == tmp_path / "creds" / "gateway.key"
    assert s.broker.password_file == tmp_path / "creds" / "broker.password"
    # the environment form works too
    env = {"CREDENTIALS_DIRECTORY": "/run/c", "DIAMS_GATEWAY_KEY_FILE": "credential:k"}
    s = _load(tmp_path, MINIMAL, env)
    assert s.key_file == Path("/run/c/k")


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("credential:gateway.key", {}, "key_file = 'credential:gateway.key' needs $CREDENTIALS_DIRECTORY"),
        ("credential:../etc/shadow", {"CREDENTIALS_DIRECTORY": "/run/c"}, "not a valid credential name"),
        ("credential:..", {"CREDENTIALS_DIRECTORY": "/run/c"}, "not a valid credential name"),
        ("credential:", {"CREDENTIALS_DIRECTORY": "/run/c"}, "not a valid credential name"),
    ],
)
def test_bad_credentials_are_refused(tmp_path, value, env, message):
    with pytest.raises(SettingsError, match="key_file") as info:
        _load(tmp_path, MINIMAL.replace('"/etc/gw.key"', f'"{value}"'), env)
    assert message in str(info.value)


def test_settings_are_frozen_values():
    env = {"DIAMS_GATEWAY_GATEWAY_ID": "gw", "DIAMS_GATEWAY_STATE_DIR": "/s", "DIAMS_GATEWAY_KEY_FILE": "/k"}
    s = load_settings(None, env=env)
    with pytest.raises(AttributeError):
        s.gateway_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        GatewaySettings("gw", Path("/s"), Path("/k"))  # type: ignore[misc]  # keyword-only


def test_a_missing_file_is_a_settings_error_naming_it(tmp_path):
    with pytest.raises(SettingsError, match=r"cannot read .*absent\.toml: No such file"):
        load_settings(tmp_path / "absent.toml", env={})


def test_dumped_settings_load_back_as_the_same_values(tmp_path):
    """The demo writes its gateway.toml from values (firmware_sim.site): what it writes is what it meant."""
    from gateway.settings import EnforcementSettings, HttpSettings, LedgerSettings, dump_settings

    s = GatewaySettings(
        gateway_id="gw-x",
        state_dir=tmp_path / "state dir",
        key_file=tmp_path / 'odd "name".key',
        ledger=LedgerSettings(url="http://127.0.0.1:1", deployed_block=7, poll_interval=0.25),
        enforcement=EnforcementSettings(
            mode="mosquitto", password_file=Path("/p"), acl_file=Path("/a"), pid_file=Path("/pid")
        ),
        http=HttpSettings(port=0),
    )
    assert _load(tmp_path, dump_settings(s)) == s
