"""``diams-gateway check-config`` is a real preflight, and ``run`` names the key of a bad secret (exit 2).

A real embedded chain holds the channel and the gateway's registration; the keystore is a real
encrypted keystore. Each case breaks one thing and checks the exit status and the key named."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from gateway.cli import main
from ledger_bridge import Ledger, Role, Signer
from ledger_bridge.embedded import EmbeddedBackend
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.keystore import create_keystore
from ledger_bridge.sealing import generate_gateway_key

ETH = 10**18
GW = "gw-pre"


def _secret(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    import asyncio

    tmp = tmp_path_factory.mktemp("preflight")
    passphrase = secrets.token_urlsafe(12)
    account = create_keystore(tmp / "gw.keystore", passphrase)  # the enforced floor, 2**18
    _secret(tmp / "gw.passphrase", passphrase.encode())
    pub = generate_gateway_key(tmp / "gw.key")
    _secret(tmp / "broker.password", secrets.token_urlsafe(24).encode())

    async def deploy() -> object:
        admin, operator = Signer.generate(label="admin"), Signer.generate(label="operator")
        async with Ledger(backend=EmbeddedBackend(tmp / "chain.sqlite")) as ledger:
            for s in (admin, operator):
                await ledger.fund(s.address, 10 * ETH)
            channel = await ledger.deploy(admin=admin)
            await ledger.actor(admin).grant_role(Role.OPERATOR, operator.address)
            await ledger.actor(operator).register_gateway(
                onchain_gateway_id(GW.encode()), x25519_public_key=pub, account=account.address
            )
            return channel

    channel = asyncio.run(deploy())
    return {"tmp": tmp, "channel": channel}


def _config(site: dict[str, object], tmp: Path, **override: str) -> Path:
    base: Path = site["tmp"]  # type: ignore[assignment]
    channel = site["channel"]
    values = {
        "gateway_id": f'"{GW}"',
        "key_file": f'"{base / "gw.key"}"',
        "registry": f'"{channel.registry}"',  # type: ignore[attr-defined]
        "auth_log": f'"{channel.auth_log}"',  # type: ignore[attr-defined]
        "passphrase_file": f'"{base / "gw.passphrase"}"',
        "ledger": f'mode = "embedded"\npath = "{base / "chain.sqlite"}"',
        "broker_password": f'"{base / "broker.password"}"',
    }
    values.update(override)
    path = tmp / "gateway.toml"
    path.write_text(
        f"gateway_id = {values['gateway_id']}\nstate_dir = \"{tmp / 'state'}\"\n"
        f"key_file = {values['key_file']}\n"
        f"[broker]\npassword_file = {values['broker_password']}\n"
        f"[ledger]\n{values['ledger']}\nregistry = {values['registry']}\nauth_log = {values['auth_log']}\n"
        f"keystore = \"{base / 'gw.keystore'}\"\npassphrase_file = {values['passphrase_file']}\n"
    )
    return path


def test_check_config_passes_a_good_site(site, tmp_path, capsys) -> None:
    assert main(["check-config", "--config", str(_config(site, tmp_path))]) == 0
    out = capsys.readouterr().out
    assert f"configuration ok: gateway {GW} registered (account 0x" in out and "ledger at block" in out


def test_check_config_refuses_a_wrong_keystore_passphrase(site, tmp_path, capsys) -> None:
    wrong = _secret(tmp_path / "wrong.passphrase", b"not the passphrase")
    assert main(["check-config", "--config", str(_config(site, tmp_path, passphrase_file=f'"{wrong}"'))]) == 2
    err = capsys.readouterr().err
    assert "ledger.keystore: wrong passphrase" in err and "not the passphrase" not in err


def test_check_config_refuses_a_short_key(site, tmp_path, capsys) -> None:
    short = _secret(tmp_path / "short.key", secrets.token_bytes(16))
    assert main(["check-config", "--config", str(_config(site, tmp_path, key_file=f'"{short}"'))]) == 2
    assert "key_file: " in (err := capsys.readouterr().err) and "16 bytes, not a 32-byte" in err


def test_check_config_refuses_a_short_broker_password(site, tmp_path, capsys) -> None:
    weak = _secret(tmp_path / "weak.password", b"abc")
    cfg = _config(site, tmp_path, broker_password=f'"{weak}"')
    assert main(["check-config", "--config", str(cfg)]) == 2
    assert "broker.password_file: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"0xZZZZ2315678afecb367f032d93F642f64180aa3"', "is not a contract address"),
        ('"0x5FbDB2315678afecb367f032d93F642f64180aa"', "is not a contract address"),
        ('"0x5FbDB2315678afecb367f032d93F642f64180AA3"', "wrong EIP-55 checksum"),
    ],
)
def test_check_config_refuses_a_bad_address(site, tmp_path, capsys, value: str, why: str) -> None:
    assert main(["check-config", "--config", str(_config(site, tmp_path, registry=value))]) == 2
    assert "ledger.registry: " in (err := capsys.readouterr().err) and why in err


def test_check_config_refuses_a_gateway_not_registered_or_with_another_key(site, tmp_path, capsys) -> None:
    assert main(["check-config", "--config", str(_config(site, tmp_path, gateway_id='"gw-other"'))]) == 2
    assert "gateway_id: 'gw-other' is not registered" in capsys.readouterr().err
    other = tmp_path / "other.key"
    generate_gateway_key(other)
    assert main(["check-config", "--config", str(_config(site, tmp_path, key_file=f'"{other}"'))]) == 2
    assert "key_file: its public key does not match" in capsys.readouterr().err


def test_check_config_says_when_the_ledger_is_unreachable(site, tmp_path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(site, tmp_path, ledger=f'mode = "rpc"\nurl = "http://127.0.0.1:{port}"')
    assert main(["check-config", "--config", str(cfg)]) == 1
    assert "ledger: no EVM node answering" in capsys.readouterr().err


def test_run_exits_2_naming_the_key_of_a_bad_secret(site, tmp_path, capsys) -> None:
    wrong = _secret(tmp_path / "wrong.passphrase", b"not the passphrase")
    assert main(["run", "--config", str(_config(site, tmp_path, passphrase_file=f'"{wrong}"'))]) == 2
    assert "configuration error: ledger.keystore: wrong passphrase" in capsys.readouterr().err
    short = _secret(tmp_path / "short.key", secrets.token_bytes(31))
    assert main(["run", "--config", str(_config(site, tmp_path, key_file=f'"{short}"'))]) == 2
    assert "configuration error: key_file: " in capsys.readouterr().err
