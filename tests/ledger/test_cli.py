"""`diams-ledger` end to end against anvil: keys, deploy, roles, a CSV with bad rows, lifecycle, show."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from ledger_bridge import Ledger, cli, keystore, load_signer

from .helpers import claim_code, device_id

PASS = "cli test passphrase"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["anvil", "embedded"])
def rpc(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The backend options: a node over JSON-RPC, or the durable embedded chain reopened by each command."""
    if request.param == "anvil":
        return ("--rpc", request.getfixturevalue("anvil_url"))
    return ("--embedded", str(tmp_path / "chain.sqlite"))


@pytest.fixture
def actors(
    tmp_path: Path, rpc: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, tuple[Path, str]]:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    monkeypatch.setattr(keystore, "MIN_SCRYPT_N", 1024)  # tests only: the CLI's floor is 2**18
    made = {}
    for name in ("admin", "manufacturer", "owner", "operator", "gateway"):
        path = tmp_path / f"{name}.json"
        code, out, _ = run(
            capsys, "keys", "create", "--out", str(path), "--label", name, "--scrypt-n", "1024"
        )
        assert code == 0
        address = out.strip()
        assert run(capsys, *rpc, "fund", address, "--ether", "50")[0] == 0
        made[name] = (path, address)
    return made


def test_cli_full_flow_with_bad_csv_rows(
    tmp_path: Path,
    rpc: tuple[str, str],
    actors: dict[str, tuple[Path, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = tmp_path / "channel.json"
    admin, mfr, owner = actors["admin"], actors["manufacturer"], actors["owner"]
    code, out, _ = run(capsys, *rpc, "--keystore", str(admin[0]), "deploy", "--out", str(channel))
    assert code == 0 and json.loads(channel.read_text())["registry"].startswith("0x")
    ch = (*rpc, "--channel", str(channel))

    # the manufacturer has no role yet: a clear refusal, then the admin grants it
    csv_path = tmp_path / "devices.csv"
    fw, chars = "0x" + hashlib.sha256(b"fw").hexdigest(), "0x" + hashlib.sha256(b"c").hexdigest()
    good = [device_id(n, tag=0xCC) for n in range(1, 8)]
    lines = ["device_id,model,firmware_hash,characteristics,claim_code"]
    lines += [f"{d.hex()},sensor-v1,{fw},{chars},{claim_code(d).decode()}" for d in good[:3]]
    lines.append(f"zz-not-hex,sensor-v1,{fw},{chars},x")  # line 5: malformed id
    lines.append(f"{good[3].hex()},sensor-v1,0x1234,{chars},x")  # line 6: short firmware hash
    lines.append(f"{good[0].hex()},sensor-v1,{fw},{chars},y")  # line 7: duplicate in the file
    lines += [f"{d.hex()},sensor-v1,{fw},{chars},{claim_code(d).decode()}" for d in good[4:]]
    csv_path.write_text("\n".join(lines) + "\n")

    code, out, err = run(capsys, *ch, "--keystore", str(mfr[0]), "register", "--csv", str(csv_path))
    assert code == 1
    assert "lacks the role MANUFACTURER_ROLE" in out
    assert run(capsys, *ch, "--keystore", str(admin[0]), "grant-role", "manufacturer", mfr[1])[0] == 0

    # one device already on chain: the chain refuses it, the other rows still land
    code, out, _ = run(
        capsys,
        *ch,
        "--keystore",
        str(mfr[0]),
        "register",
        "--id",
        good[5].hex(),
        "--model",
        "m",
        "--firmware-hash",
        fw,
        "--characteristics",
        chars,
        "--claim-hash",
        "0x" + hashlib.sha256(b"whatever").hexdigest(),
    )
    assert code == 0 and out.startswith("ok: tx 0x")
    code, out, _ = run(
        capsys, *ch, "--keystore", str(mfr[0]), "register", "--csv", str(csv_path), "--batch-size", "2"
    )
    assert code == 1
    report = out.splitlines()
    assert report[0].startswith("line 5: zz-not-hex: device_id must be 16 hex digits")
    assert report[1].startswith(f"line 6: {good[3].hex()}: firmware_hash must be 32 bytes")
    assert report[2].startswith(f"line 7: {good[0].hex()}: duplicate of line 2")
    assert report[3] == (
        f"line 9: {good[5].hex()}: registerMany: DeviceExists: device 0x{good[5].hex()} is already registered"
    )
    assert report[4] == "registered 5 devices in 3 transactions; 4 rows failed"
    for secret in (claim_code(d).decode() for d in good):
        assert secret not in out

    dev = good[0].hex()
    code_file = tmp_path / "claim.code"
    code_file.write_text(claim_code(good[0]).decode() + "\n")
    code_file.chmod(0o644)  # readable by others: refused, the claim code stays secret until used
    code, out, err = run(
        capsys, *ch, "--keystore", str(owner[0]), "claim", dev, "--code-file", str(code_file)
    )
    assert code == 1 and "claim code file" in err and "accessible to group or others" in err
    code_file.chmod(0o600)
    with pytest.raises(SystemExit):  # the claim code is never an argument
        cli.main([*ch, "--keystore", str(owner[0]), "claim", dev, claim_code(good[0]).decode()])
    capsys.readouterr()
    steps = [
        ("claim", dev, "--code-file", str(code_file)),
        ("activate", dev),
        ("suspend", dev),
        ("activate", dev),
    ]
    for step in steps:
        code, out, err = run(capsys, *ch, "--keystore", str(owner[0]), *step)
        assert code == 0, (step, err)
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong code\n"))  # from standard input
    code, out, err = run(capsys, *ch, "--keystore", str(owner[0]), "claim", good[1].hex(), "--code-file", "-")
    assert (
        code == 1
        and err.strip()
        == f"error: claim: BadClaimCode: the claim code does not match the claim hash "
        f"of device 0x{good[1].hex()}"
    )
    code, out, err = run(capsys, *ch, "--keystore", str(owner[0]), "decommission", good[2].hex())
    assert code == 1 and "is Manufactured, cannot decommission" in err

    # gateways: the operator registers one, the owner publishes its sealed key, then withdraws it
    operator, gateway = actors["operator"], actors["gateway"]
    assert run(capsys, *ch, "--keystore", str(admin[0]), "grant-role", "operator", operator[1])[0] == 0
    x25519 = "0x" + os.urandom(32).hex()
    code, _, err = run(
        capsys,
        *ch,
        "--keystore",
        str(operator[0]),
        "register-gateway",
        "gw-1",
        "--x25519",
        x25519,
        "--account",
        gateway[1],
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        *ch,
        "--keystore",
        str(owner[0]),
        "authorize-gateway",
        dev,
        "gw-1",
        "--sealed-key",
        os.urandom(80).hex(),
        "--commitment",
        "0x" + hashlib.sha256(b"k").hexdigest(),
    )
    assert code == 0, err
    code, out, _ = run(capsys, *ch, "show", "device", dev)
    assert "gateway       gw-1: sealed key for epoch 0, current" in out
    assert run(capsys, *ch, "--keystore", str(owner[0]), "deauthorize-gateway", dev, "gw-1")[0] == 0

    code, out, _ = run(capsys, *ch, "show", "device", dev)
    assert code == 0
    assert "state         Active (epoch 1)" in out
    assert f"owner         {owner[1]}" in out
    assert "gateway       gw-1: sealed key for epoch 0, stale or withdrawn" in out
    assert [line.split()[4] for line in out.splitlines() if line.startswith("  block")] == [
        "DeviceRegistered",
        "DeviceClaimed",
        "DeviceActivated",
        "DeviceSuspended",
        "DeviceActivated",
        "GatewayAuthorized",
        "GatewayDeauthorized",
    ]
    code, out, _ = run(capsys, *ch, "show", "device", dev, "--json")
    assert json.loads(out)["device"]["state"] == "Active"

    # an anchor made by the gateway's own key verifies; a wrong expectation does not
    root = os.urandom(32)

    async def anchor() -> None:
        backend = cli._backend(cli.build_parser().parse_args([*ch, "show", "device", dev]))
        async with Ledger(
            backend=backend, channel=cli._channel(cli.build_parser().parse_args([*ch, "show", "device", dev]))
        ) as led:
            signer = load_signer(gateway[0], PASS)
            await led.actor(signer).anchor(
                b"gw-1".ljust(32, b"\0"), merkle_root=root, count=4, first_seq=1, last_seq=4
            )

    asyncio.run(anchor())
    code, out, _ = run(
        capsys, *ch, "verify-anchor", "0x" + root.hex(), "--gateway-id", "gw-1", "--count", "4"
    )
    assert code == 0 and out.strip().endswith("verified") and "4 records, sequence 1..4" in out
    code, out, _ = run(
        capsys, *ch, "verify-anchor", "0x" + root.hex(), "--gateway-id", "gw-1", "--count", "5"
    )
    assert code == 1 and "MISMATCH: count differs (expected 5)" in out

    code, out, err = run(capsys, *ch, "verify-anchor", "0x" + os.urandom(32).hex(), "--gateway-id", "gw-1")
    assert code == 1 and "UnknownAnchor: gateway 0x" in err and "anchored no batch with Merkle root" in err
    # anchors are keyed by (gateway, root): the same root asked of another gateway is unknown
    code, out, err = run(capsys, *ch, "verify-anchor", "0x" + root.hex(), "--gateway-id", "gw-2")
    assert code == 1 and "UnknownAnchor" in err


def test_cli_wrong_passphrase_and_missing_backend(
    tmp_path: Path,
    actors: dict[str, tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rpc: tuple[str, str],
) -> None:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, "not it")
    code, _, err = run(capsys, *rpc, "--keystore", str(actors["admin"][0]), "deploy")
    assert code == 1 and "wrong passphrase for keystore" in err and "not it" not in err
    code, _, err = run(capsys, "show", "device", "0x" + "01" * 8)
    assert code == 1 and "choose a backend" in err
    # a passphrase file others may read is refused before it is read; 0600 is used
    monkeypatch.delenv(cli.PASSPHRASE_ENV)
    pass_file = tmp_path / "admin.passphrase"
    pass_file.write_text(PASS + "\n")
    pass_file.chmod(0o644)
    argv = [*rpc, "--keystore", str(actors["admin"][0]), "--passphrase-file", str(pass_file), "deploy"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "passphrase file" in err and "accessible to group or others" in err
    assert PASS not in err
    pass_file.chmod(0o600)
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "channel.json"))
    assert code == 0, err


def test_cli_rotates_changes_and_removes_a_gateway(
    tmp_path: Path,
    rpc: tuple[str, str],
    actors: dict[str, tuple[Path, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 10 finding (d) from the operator's side: a gateway's key and account move, and it retires,
    with `diams-ledger`; only its operator (or an admin) may."""
    channel = tmp_path / "channel.json"
    admin, operator, owner, gateway = actors["admin"], actors["operator"], actors["owner"], actors["gateway"]
    assert run(capsys, *rpc, "--keystore", str(admin[0]), "deploy", "--out", str(channel))[0] == 0
    ch = (*rpc, "--channel", str(channel))
    assert run(capsys, *ch, "--keystore", str(admin[0]), "grant-role", "operator", operator[1])[0] == 0
    old_key, new_key = os.urandom(32).hex(), os.urandom(32).hex()
    as_operator = (*ch, "--keystore", str(operator[0]))
    register = ("register-gateway", "gw-1", "--x25519", old_key, "--account", gateway[1])
    code, _, err = run(capsys, *as_operator, *register)
    assert code == 0, err

    rotate = ("rotate-gateway-key", "gw-1", "--x25519", new_key)
    code, _, err = run(capsys, *ch, "--keystore", str(owner[0]), *rotate)
    assert code == 1 and "NotGatewayOperator: " in err and "is neither the operator of gateway" in err
    code, out, err = run(capsys, *as_operator, *rotate)
    assert code == 0 and out.startswith("ok: tx 0x"), err
    code, out, err = run(capsys, *as_operator, "change-gateway-account", "gw-1", "--account", owner[1])
    assert code == 0, err
    code, out, _ = run(capsys, *ch, "show", "gateway", "gw-1", "--json")
    shown = json.loads(out)
    assert (shown["x25519_public_key"], shown["account"]) == ("0x" + new_key, owner[1])

    code, out, err = run(capsys, *as_operator, "remove-gateway", "gw-1")
    assert code == 0, err
    removal_tx, removal_block = out.split()[2], int(out.split()[5].rstrip(","))
    show_removed_gateway(capsys, ch, "gw-1", removal_block, removal_tx, operator[1])
    code, _, err = run(capsys, *ch, "show", "gateway", "gw-never")
    assert (code, err) == (1, "error: gateway gw-never was never registered on this channel\n")
    code, out, err = run(capsys, *ch, "list", "devices", "--gateway", "gw-1")
    assert code == 0 and f"gateway gw-1 was removed in block {removal_block} (" in out.splitlines()[-1], err
    assert out.splitlines()[-1].endswith(": it may authenticate no device (`diams-ledger show gateway gw-1`)")
    code, _, err = run(capsys, *ch, "list", "devices", "--gateway", "gw-never")
    assert (code, err) == (1, "error: gateway gw-never was never registered on this channel\n")

    # every command that names it says it was removed, in words, before sending anything
    removed = f"gateway gw-1 was removed in block {removal_block} ("
    sealed, commit = "0x" + os.urandom(80).hex(), "0x" + os.urandom(32).hex()
    bundle, password = rekey_files(tmp_path)
    rekey = ("rekey", bundle.name.split(".")[0], "--bundle", str(bundle), "--broker", "127.0.0.1:9",
             "--gateway", "gw-1", "--broker-username", "gateway-gw-1.1",
             "--broker-password-file", str(password))  # fmt: skip
    for who, argv in [
        (as_operator, register),
        (as_operator, ("remove-gateway", "gw-1")),
        (as_operator, rotate),
        (as_operator, ("change-gateway-account", "gw-1", "--account", owner[1])),
        ((*ch, "--keystore", str(owner[0])),
         ("authorize-gateway", "d1" * 8, "gw-1", "--sealed-key", sealed, "--commitment", commit)),
        ((*ch, "--keystore", str(owner[0])), rekey),  # refused before it dials the broker
        ((*ch, "--keystore", str(owner[0])), ("reseal", str(bundle), "--gateway", "gw-1")),
    ]:
        code, _, err = run(capsys, *who, *argv)
        assert code == 1 and removed in err and "Unknown" not in err and "Exists" not in err, (argv, err)
    code, _, err = run(capsys, *as_operator, *register)
    assert "can never be registered again" in err and "under a new name" in err
    code, _, err = run(capsys, *as_operator, "remove-gateway", "gw-never")
    assert (code, err) == (1, "error: gateway gw-never was never registered on this channel\n")
    show_removed_gateway(capsys, ch, "gw-1", removal_block, removal_tx, operator[1])  # nothing was sent

    # a channel admin may remove it too, and is named as such
    register_2 = ("register-gateway", "gw-2", "--x25519", old_key, "--account", gateway[1])
    code, _, err = run(capsys, *as_operator, *register_2)
    assert code == 0, err
    code, out, err = run(capsys, *ch, "--keystore", str(admin[0]), "remove-gateway", "gw-2")
    assert code == 0, err
    code, out, err = run(capsys, *ch, "show", "gateway", "gw-2", "--json")
    removal = json.loads(out)["removal"]
    assert (removal["by"].lower(), removal["by_role"]) == (admin[1].lower(), "a channel admin")


def rekey_files(tmp_path: Path) -> tuple[Path, Path]:
    """An owner bundle (0600) of a device made here, and a broker password file (0600)."""
    from ledger_bridge.enrollment import ProvisionedDevice

    d = ProvisionedDevice.generate(model="sensor", serial="RM-1", firmware_hash=bytes(32))
    bundle = tmp_path / f"{d.device_id.hex()}.owner.json"
    bundle.write_text(json.dumps({
        "device_id": d.device_id.hex(), "model": d.model, "serial": d.serial, "mac": d.mac.hex(),
        "firmware_hash": d.firmware_hash.hex(), "secret": d.secret.hex(), "salt": d.salt.hex(),
        "claim_code": "not used",
    }))  # fmt: skip
    password = tmp_path / "broker.password"
    password.write_text("not used\n")
    for path in (bundle, password):
        path.chmod(0o600)
    return bundle, password


def show_removed_gateway(
    capsys: pytest.CaptureFixture[str], ch: tuple[str, ...], name: str, block: int, tx: str, by: str
) -> None:
    """`show gateway` of a removed gateway: when (block and time), by whom, the transaction, and what it
    means, in text and JSON; its history ends with the removal."""
    code, out, err = run(capsys, *ch, "show", "gateway", name)
    assert code == 0, err
    lines = out.splitlines()
    status = next(line for line in lines if line.startswith("status"))
    assert status.startswith(f"status      removed in block {block} (20") and " UTC) by " in status
    assert status.lower().endswith(f"by {by} (its operator), tx {tx}".lower())
    assert "account     none (zeroed by the removal)" in lines
    assert "removed means:" in lines
    assert any("can never be registered again" in line for line in lines)
    assert any(f"diams-ledger deauthorize-gateway <device> {name}" in line for line in lines)
    history = lines[lines.index("history:") + 1 :]
    assert "GatewayRegistered" in history[0] and "GatewayRemoved" in history[-1] and tx in history[-1]
    code, out, err = run(capsys, *ch, "show", "gateway", name, "--json")
    shown = json.loads(out)
    assert (shown["removed"], shown["account"], shown["removal"]["block"]) == (True, "0x" + "0" * 40, block)
    assert (shown["removal"]["tx"], shown["removal"]["by"].lower()) == (tx, by.lower())
    assert shown["removal"]["by_role"] == "its operator"
    assert shown["history"][-1]["event"] == "GatewayRemoved" and shown["consequences"]
