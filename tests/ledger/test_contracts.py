"""The committed artifacts are exactly what the pinned compiler makes of the committed sources, and
foreign errors and secrets are handled at the bridge's boundary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger_bridge import (
    Channel,
    EthereumTesterBackend,
    KeystoreError,
    Ledger,
    LedgerRevert,
    LedgerUnavailable,
    RpcBackend,
    Signer,
    create_keystore,
    load_signer,
)
from ledger_bridge.anvil import free_port
from ledger_bridge.artifacts import CONTRACT_NAMES, load_artifact
from ledger_bridge.errors import ChannelError
from ledger_bridge.reverts import revert_from_data
from tests.conftest import require

from .conftest import LEDGER_DIR


def test_artifacts_are_reproducible(tmp_path: Path) -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require((LEDGER_DIR / "node_modules" / "solc").is_dir(), "npm packages in ledger_bridge (npm ci)")
    assert node is not None
    subprocess.run(
        [node, str(LEDGER_DIR / "build_contracts.mjs"), str(tmp_path)], check=True, capture_output=True
    )
    built = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in (LEDGER_DIR / "artifacts").glob("*.json"))
    assert built == committed == sorted(f"{n}.json" for n in CONTRACT_NAMES)
    for name in built:
        assert (tmp_path / name).read_bytes() == (LEDGER_DIR / "artifacts" / name).read_bytes(), name


def test_artifacts_pin_the_compiler() -> None:
    raw = json.loads((LEDGER_DIR / "artifacts" / "DeviceRegistry.json").read_text())
    assert raw["compiler"]["version"].startswith("0.8.37+")
    assert raw["compiler"]["settings"]["evmVersion"] == "paris"
    assert raw["compiler"]["settings"]["optimizer"]["enabled"] is True
    assert load_artifact("DeviceRegistry").bytecode.startswith("0x60")


def test_revert_data_is_decoded_into_words() -> None:
    assert str(revert_from_data(b"")) == "reverted without a reason (out of gas or a failed require)"
    unknown = revert_from_data(bytes.fromhex("deadbeef"))
    assert unknown.error == "" and "unknown custom error 0xdeadbeef" in str(unknown)
    assert "malformed" in str(revert_from_data(bytes.fromhex("ece32755") + b"\x01"))


@pytest.mark.asyncio
async def test_connection_refused_is_ledger_unavailable() -> None:
    backend = RpcBackend(url=f"http://user:token@127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(LedgerUnavailable) as exc:
        async with Ledger(backend=backend):
            pass
    assert "token" not in str(exc.value)
    assert "127.0.0.1" in str(exc.value)


@pytest.mark.asyncio
async def test_attaching_to_an_address_without_code_is_refused() -> None:
    empty = "0x" + "11" * 20
    with pytest.raises(ChannelError, match="no contract at"):
        async with Ledger(backend=EthereumTesterBackend(), channel=Channel(registry=empty, auth_log=empty)):
            pass
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        with pytest.raises(ChannelError):
            await ledger.device(b"\x01" * 8)


@pytest.mark.asyncio
async def test_unfunded_actor_gets_a_clear_error_not_a_key() -> None:
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        signer = Signer.generate(label="broke")
        with pytest.raises(Exception) as exc:
            await ledger.deploy(admin=signer)
        assert not isinstance(exc.value, LedgerRevert)
        assert type(exc.value).__module__ == "ledger_bridge.errors"


def test_keystore_round_trip_and_secrets_stay_out(tmp_path: Path) -> None:
    path = tmp_path / "owner.json"
    signer = create_keystore(path, "correct horse", label="owner")  # eth-keyfile's default cost, 2**18
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = load_signer(path, "correct horse")
    assert loaded.address == signer.address and loaded.label == "owner"
    key_hex = signer._account.key.hex()
    assert key_hex not in path.read_text()
    for text in (repr(signer), repr(loaded), str(signer)):
        assert key_hex not in text and "correct horse" not in text
    with pytest.raises(KeystoreError) as wrong:
        load_signer(path, "wrong passphrase")
    assert "wrong passphrase" in str(wrong.value) and "wrong passphrase for keystore" in str(wrong.value)
    assert "correct horse" not in str(wrong.value)
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, "x")
    for weak in (2, 2**10, 2**17):  # the old floor was 2**10: nothing under eth-keyfile's default now
        with pytest.raises(KeystoreError, match="below the minimum"):
            create_keystore(tmp_path / "weak.json", "x", scrypt_n=weak)
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] >= 2**18
    # a weak keystore made elsewhere is refused when loaded, and so is one others may read
    import eth_account

    weak = tmp_path / "weak-elsewhere.json"
    weak.write_text(
        json.dumps(eth_account.Account.encrypt(os.urandom(32), "x", kdf="scrypt", iterations=2**10))
    )
    weak.chmod(0o600)
    with pytest.raises(KeystoreError, match="scrypt cost of 1024, below the minimum"):
        load_signer(weak, "x")
    path.chmod(0o640)
    with pytest.raises(KeystoreError, match="accessible to group or others"):
        load_signer(path, "correct horse")
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / "empty.json", "")


def test_public_names_match_all() -> None:
    import ledger_bridge

    exported = set(ledger_bridge.__all__)
    assert all(hasattr(ledger_bridge, name) for name in exported)
    for module in ("errors", "model", "keystore", "backends", "ledger", "actor"):
        mod = getattr(ledger_bridge, module)
        public = {
            n
            for n, v in vars(mod).items()
            if isinstance(v, type) and v.__module__ == mod.__name__ and not n.startswith("_")
        }
        assert public <= exported | {"Artifact"}, (module, public - exported)
