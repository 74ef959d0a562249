"""`diams-ledger` finishes every actor's workflow without Python: gateways and policies by name, sealing
from the owner's bundle, onboarding a batch, listing, histories with authentications, recovery, JSON,
help text, and one-line errors. On the durable embedded chain, each command a process of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from device_agent.agent.provision import provision
from device_agent.core import identity
from gateway.audit import AuditLog
from ledger_bridge import Ledger, cli
from ledger_bridge.embedded import EmbeddedBackend
from ledger_bridge.model import Channel, policy_key
from ledger_bridge.sealing import generate_gateway_key, load_gateway_key, unseal

PASS = "workflow passphrase"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    """A channel with a manufacturer, an owner, an operator and a gateway account, each its own keystore."""
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    monkeypatch.setattr("ledger_bridge.keystore.MIN_SCRYPT_N", 1024)  # tests only: the floor is 2**18
    chain = ("--embedded", str(tmp_path / "chain.sqlite"))
    keys = {}
    for name in ("admin", "manufacturer", "owner", "operator", "gateway"):
        path = tmp_path / f"{name}.json"
        code, out, _ = run(
            capsys, "keys", "create", "--out", str(path), "--label", name, "--scrypt-n", "1024"
        )
        assert code == 0
        keys[name] = (str(path), out.strip())
        assert run(capsys, *chain, "fund", out.strip())[0] == 0
    channel = tmp_path / "channel.json"
    assert run(capsys, *chain, "--keystore", keys["admin"][0], "deploy", "--out", str(channel))[0] == 0
    ch = (*chain, "--channel", str(channel))
    for role in ("manufacturer", "operator"):
        assert run(capsys, *ch, "--keystore", keys["admin"][0], "grant-role", role, keys[role][1])[0] == 0
    return {"ch": ch, "keys": keys, "channel": channel, "chain": tmp_path / "chain.sqlite"}


def test_owner_workflow_end_to_end(
    tmp_path: Path, world: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    ch: tuple[str, ...] = world["ch"]  # type: ignore[assignment]
    keys: dict[str, tuple[str, str]] = world["keys"]  # type: ignore[assignment]
    mfr, owner, op = keys["manufacturer"][0], keys["owner"][0], keys["operator"][0]

    # the manufacturer provisions three devices and registers them from the CSV provisioning wrote
    factory = tmp_path / "factory"
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"firmware 1")
    ids = [
        provision(
            model="pi-sensor", serial=f"SN-{n}", mac=f"02:00:00:00:00:0{n}", firmware=firmware, out=factory
        ).record.device_id
        for n in range(1, 4)
    ]
    assert "[[streams]]" in (factory / f"{ids[0]}.agent.toml").read_text()
    code, out, err = run(
        capsys, *ch, "--keystore", mfr, "register", "--csv", str(factory / "registration.csv")
    )
    assert code == 0, err

    # the operator registers the gateway with the key exactly as `diams-gateway keys` prints it (no 0x)
    pub = generate_gateway_key(tmp_path / "gw.key")
    code, out, err = run(
        capsys,
        *ch,
        "--keystore",
        op,
        "register-gateway",
        "gw-1",
        "--x25519",
        pub.hex(),
        "--account",
        keys["gateway"][1],
    )
    assert code == 0, err
    code, out, _ = run(capsys, *ch, "show", "gateway", "gw-1")
    assert code == 0 and f"x25519      0x{pub.hex()}" in out and keys["gateway"][1] in out
    code, out, _ = run(capsys, *ch, "show", "gateway", "gw-1", "--json")
    assert json.loads(out)["x25519_public_key"] == "0x" + pub.hex()
    code, _, err = run(capsys, *ch, "show", "gateway", "gw-nope")
    assert code == 1 and err == "error: gateway gw-nope was never registered on this channel\n"

    # the owner defines a policy by name and reads it back
    code, out, err = run(
        capsys,
        *ch,
        "--keystore",
        owner,
        "define-policy",
        "sensors",
        "--publish",
        "telemetry,status",
        "--subscribe",
        "config",
        "--json",
    )
    assert code == 0 and json.loads(out)["transaction_hash"].startswith("0x"), err
    code, out, _ = run(capsys, *ch, "show", "policy", "sensors")
    assert code == 0 and "publish     telemetry, status" in out and "subscribe   config" in out

    # onboard two devices from their bundles and one row with a wrong claim code: that row only fails
    batch = tmp_path / "batch.csv"
    batch.write_text(f"device_id,claim_code\n{ids[0]},\n{ids[1]},\n{ids[2]},not-its-code\n")
    code, out, err = run(
        capsys,
        *ch,
        "--keystore",
        owner,
        "onboard",
        "--csv",
        str(batch),
        "--policy",
        "sensors",
        "--gateway",
        "gw-1",
        "--bundle-dir",
        str(factory),
    )
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == f"line 4: {ids[2]}: the claim code does not match the registered claim hash"
    assert lines[1].startswith(
        "onboarded 2 devices (claimed, policy sensors, active), authorized 2 device keys"
    )
    bundle2 = json.loads((factory / f"{ids[2]}.owner.json").read_text())
    assert bundle2["claim_code"] not in out + err and bundle2["secret"] not in out + err

    # the third one by single commands, sealing from its bundle
    d3 = ids[2]
    code_file = tmp_path / "claim.code"
    code_file.write_text(bundle2["claim_code"] + "\n")
    code_file.chmod(0o600)
    for step in (
        ("claim", d3, "--code-file", str(code_file)),
        ("set-policy", d3, "sensors"),
        ("activate", d3),
        ("authorize-gateway", d3, "gw-1", "--bundle", str(factory / f"{d3}.owner.json")),
    ):
        code, out, err = run(capsys, *ch, "--keystore", owner, *step)
        assert code == 0 and out.startswith("ok: tx 0x"), (step, err)
    code, _, err = run(
        capsys,
        *ch,
        "--keystore",
        owner,
        "authorize-gateway",
        d3,
        "gw-1",
        "--bundle",
        str(factory / f"{ids[0]}.owner.json"),
    )
    assert code == 1 and "is the bundle of device" in err

    # every device's sealed key opens with the gateway's private key and matches its commitment
    async def grants() -> None:
        channel = Channel(**json.loads(world["channel"].read_text()))  # type: ignore[union-attr]
        async with Ledger(backend=EmbeddedBackend(world["chain"]), channel=channel) as ledger:  # type: ignore[arg-type]
            for d in ids:
                dev = bytes.fromhex(d)
                g = await ledger.grant(dev, b"gw-1".ljust(32, b"\0"))
                assert g.current
                k = unseal(
                    g.sealed_key, load_gateway_key(tmp_path / "gw.key"), dev, b"gw-1", 0, g.key_commitment
                )
                assert identity.key_commitment(k.k_dg) == g.key_commitment
                rec = await ledger.device(dev)
                # policies live in their author's namespace: the owner's "sensors"
                sensors = policy_key(rec.owner, b"sensors".ljust(32, b"\0"))
                assert rec.state.label == "Active" and rec.policy_id == sensors

    import asyncio

    asyncio.run(grants())

    # lists from a local index, filtered
    code, out, _ = run(capsys, *ch, "list", "devices", "--state", "Active")
    assert code == 0 and out.splitlines()[-1] == "3 shown of 3 matching (offset 0)"
    # the policy column shows its name: policies live in their author's namespace (the owner's "sensors"
    # is policy_key(owner, "sensors")), and PolicyDefined carries the name into the index
    owner_address = keys["owner"][1]  # type: ignore[index]
    sensors_key = "0x" + policy_key(owner_address, b"sensors".ljust(32, b"\0")).hex()
    assert all(d in out for d in ids) and sensors_key[:12] not in out
    assert all(line.split()[3] == "sensors" for line in out.splitlines() if line.split()[0] in ids[:2])
    code, out, _ = run(capsys, *ch, "list", "devices", "--gateway", "gw-1", "--prefix", ids[1][:6], "--json")
    found = json.loads(out)
    assert ids[1] in [r["device_id"] for r in found["devices"]]
    assert all(r["device_id"].startswith(ids[1][:6]) for r in found["devices"])
    code, out, _ = run(capsys, *ch, "list", "devices", "--owner", keys["manufacturer"][1])
    assert out.splitlines()[-1] == "0 shown of 0 matching (offset 0)"
    code, _, err = run(capsys, *ch, "list", "devices", "--state", "Sleeping")
    assert code == 1 and err.startswith("error: unknown state 'Sleeping'")

    # a device's history: chain events with block times and tx hashes, plus the gateway's audit records
    audit_path = tmp_path / "audit.log"
    audit = AuditLog(audit_path)
    audit.append("authenticated", device=d3)
    audit.append("rejected", device=d3, reason="bad_proof", counter=7)
    audit.append("authenticated", device=ids[0])
    audit.close()
    code, out, _ = run(capsys, *ch, "show", "device", d3, "--audit-log", str(audit_path))
    assert code == 0
    assert "state         Active (epoch 0)" in out and "policy        sensors\n" in out
    assert "gateway       gw-1: sealed key for epoch 0, current" in out
    events = [line.split()[4] for line in out.splitlines() if line.startswith("  block")]
    assert events == [
        "DeviceRegistered",
        "DeviceKeyRegistered",  # provisioning made the device key; register --csv registered it
        "DeviceClaimed",
        "PolicySet",
        "DeviceActivated",
        "GatewayAuthorized",
    ]
    assert all(" tx 0x" in line for line in out.splitlines() if line.startswith("  block"))
    auth_lines = out.split("authentications")[1].splitlines()[1:]
    assert [a.split()[2] for a in auth_lines] == ["rejected", "authenticated"]
    code, out, _ = run(capsys, *ch, "show", "device", d3, "--audit-log", str(audit_path), "--json")
    doc = json.loads(out)
    assert doc["policy"] == "sensors" and doc["policy_id"] == sensors_key
    assert [a["event"] for a in doc["authentications"]] == [
        "rejected",
        "authenticated",
    ]
    assert doc["history"][0]["time"] > 1_600_000_000

    # recovery after a clone alert: suspend + activate in one command
    code, out, err = run(capsys, *ch, "--keystore", owner, "recover", d3)
    assert code == 0 and out.count("ok: tx 0x") == 2 and out.endswith(f"recovered: 0x{d3} is Active\n"), err
    code, out, _ = run(capsys, *ch, "show", "device", d3, "--json")
    assert [h["event"] for h in json.loads(out)["history"]][-2:] == ["DeviceSuspended", "DeviceActivated"]

    # a firmware update for the fleet: the maintainer records one hash for all three devices in one
    # transaction, the owner re-seals from the bundles; bad id lists are refused with where they went wrong
    chain = ch[: ch.index("--channel")]
    maint = str(tmp_path / "maintainer.json")
    code, maint_address, _ = run(
        capsys, "keys", "create", "--out", maint, "--label", "m", "--scrypt-n", "1024"
    )
    assert code == 0 and run(capsys, *chain, "fund", maint_address.strip())[0] == 0
    assert (
        run(capsys, *ch, "--keystore", keys["admin"][0], "grant-role", "maintainer", maint_address.strip())[0]
        == 0
    )
    for d in ids:
        assert run(capsys, *ch, "--keystore", owner, "approve-maintainer", d, maint_address.strip())[0] == 0
    image = "0x" + "ab" * 32
    listing = tmp_path / "fleet.txt"
    listing.write_text(f"# the fleet\n{ids[0]}\n{ids[1]}  # second\n\nnot-an-id\n")
    code, out, err = run(
        capsys, *ch, "--keystore", maint, "record-firmware-many", image, "--ids-file", str(listing)
    )
    assert code == 1 and err == f"error: {listing}:5: device_id must be 16 hex digits, not all zero\n", err
    code, out, err = run(capsys, *ch, "--keystore", maint, "record-firmware-many", image, ids[0], ids[0])
    assert code == 1 and err == "error: a device id is listed twice\n"
    listing.write_text(f"# the fleet\n{ids[0]}\n{ids[1]}  # second\n")
    code, out, err = run(
        capsys, *ch, "--keystore", maint, "record-firmware-many", image, ids[2], "--ids-file", str(listing)
    )
    assert code == 0 and out.startswith(f"recorded {image} for 3 devices in 1 transactions"), err
    code, out, _ = run(capsys, *ch, "show", "device", ids[0])
    assert (
        "state         Active (epoch 1)" in out and "current" not in out.split("gateway")[1].splitlines()[0]
    )
    bundles = [str(factory / f"{d}.owner.json") for d in ids]
    code, out, err = run(capsys, *ch, "--keystore", owner, "reseal", *bundles)
    assert code == 0 and out.startswith("re-sealed 3 keys for 3 devices"), err
    code, out, err = run(capsys, *ch, "--keystore", owner, "reseal", *bundles)
    assert code == 0 and out.startswith("re-sealed 0 keys for 3 devices") and "3 already current" in out, err


def test_missing_passphrase_and_no_terminal_is_one_line(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ch: tuple[str, ...] = world["ch"]  # type: ignore[assignment]
    keys: dict[str, tuple[str, str]] = world["keys"]  # type: ignore[assignment]
    monkeypatch.delenv(cli.PASSPHRASE_ENV)
    assert not sys.stdin.isatty()
    code, out, err = run(capsys, *ch, "--keystore", keys["owner"][0], "activate", "0x" + "01" * 8)
    assert code == 1 and out == ""
    assert err == (
        f"error: no passphrase: set ${cli.PASSPHRASE_ENV} or give --passphrase-file "
        "(no terminal to prompt on)\n"
    )


def _parsers(
    parser: argparse.ArgumentParser, path: str = "diams-ledger"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_option_and_command_has_help_text() -> None:
    missing = []
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}" for c in action._choices_actions if not c.help]
                continue
            if not action.help or "see ledger_bridge" in action.help:
                missing.append(f"{path} {action.option_strings or action.dest}")
    assert missing == []
