"""The recipes of docs/LEDGER.md, command for command: read from the document (so they cannot drift) and
run as processes against anvil, real Mosquitto with enforcement and the gateway daemon.

Enroll: `diams-agent provision`, `diams-ledger register/show/define-policy/onboard`, then `diams-agent run`
authenticates with the gateway. Recover: a real clone (a copy of the device's secret, behind on its
counter) is detected and quarantined; the recipe's commands bring the genuine device back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.core import events
from gateway.settings import ProtocolSettings
from ledger_bridge import Ledger, Role, RpcBackend
from ledger_bridge.anvil import AnvilNode, anvil_binary
from ledger_bridge.keystore import create_keystore
from ledger_bridge.operations import OwnerBundle
from tests.conftest import require
from tests.gateway.helpers import eventually
from tests.gateway.stack import site

ETH = 10**18

pytestmark = pytest.mark.asyncio

DOC = Path(__file__).resolve().parents[2] / "docs" / "LEDGER.md"
DOC_URL = "http://127.0.0.1:8545"
DOC_STATE_DIR = "/var/lib/diams-gateway"
BIN = Path(sys.executable).parent


def recipe(name: str) -> list[str]:
    """The command lines of the ```sh block after `<!-- recipe: name -->` (comments dropped)."""
    text = DOC.read_text()
    match = re.search(rf"<!-- recipe: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"recipe {name} not found in {DOC}"
    return [line for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


class Shell:
    """Runs a recipe's lines as a shell would, in one directory, with the site's URL and paths."""

    def __init__(self, cwd: Path, substitutions: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DIAMS_")}
        self.subs = substitutions
        self.background: list[subprocess.Popen[bytes]] = []

    def argv(self, line: str) -> list[str]:
        for old, new in self.subs.items():
            line = line.replace(old, new)
        argv = shlex.split(line)
        return [str(BIN / argv[0]), *argv[1:]]

    async def run(self, line: str) -> str:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            self.env[name] = shlex.split(value)[0]
            return ""
        argv = self.argv(line)
        if argv[1:2] == ["run"] and argv[0].endswith("diams-agent"):
            with (self.cwd / "agent.log").open("ab") as log:  # the child keeps its own descriptor
                self.background.append(
                    subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                )
            return ""
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (line, out.decode(), err.decode())
        return out.decode()

    def stop_background(self) -> None:
        for p in self.background:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(15)
        self.background.clear()


async def test_enroll_and_recover_recipes(tmp_path: Path) -> None:
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil in ledger_bridge/node_modules)")
    node = AnvilNode().start()
    try:
        async with site(
            tmp_path,
            n_devices=0,
            gateway_ids=("gw-1",),
            ledger_backend=RpcBackend(url=node.url),
            gateway_settings={"protocol": ProtocolSettings(proof_timeout=0.5, session_lifetime=600)},
        ) as s:
            await _recipes(tmp_path, s, node.url)
    finally:
        node.stop()


async def _recipes(tmp_path: Path, s: object, url: str) -> None:
    ledger: Ledger = s.ledger  # type: ignore[attr-defined]
    gw = s.gateways["gw-1"]  # type: ignore[attr-defined]
    admin = s.actors["admin"]  # type: ignore[attr-defined]
    work = tmp_path / "site"
    work.mkdir()
    enroll = recipe("enroll")
    passphrase = shlex.split(enroll[0].partition("=")[2])[0]
    # the existing site: the channel file, the actors' keystores with their roles
    (work / "channel.json").write_text(
        json.dumps(
            {
                "registry": ledger.channel.registry,
                "auth_log": ledger.channel.auth_log,
                "deployed_block": ledger.channel.deployed_block,
            }
        )
    )
    for name, role in (("manufacturer", Role.MANUFACTURER), ("owner", None)):
        signer = create_keystore(work / f"{name}.json", passphrase, label=name)
        await ledger.fund(signer.address, 10 * ETH)
        if role is not None:
            await admin.grant_role(role, signer.address)
    (work / "firmware.bin").write_bytes(b"pi-sensor firmware 1.0")

    shell = Shell(
        work,
        {DOC_URL: url, DOC_STATE_DIR: str(gw.settings.state_dir)},
    )
    shell.env["DIAMS_BROKER_PORT"] = str(s.broker.port)  # type: ignore[attr-defined]
    try:
        device_hex = ""
        for line in enroll:
            if "<device-id>" in line:
                shell.subs["<device-id>"] = device_hex
            if line.startswith("diams-agent run"):
                # a test-sized reconnect backoff: the recipe's own configuration, made impatient
                config = work / "factory" / f"{device_hex}.agent.toml"
                config.write_text(
                    config.read_text() + "\n[backoff]\nbase_s = 0.1\ncap_s = 1\nreconnect_base_s = 0.2\n"
                )
            out = await shell.run(line)
            if line.startswith("diams-agent provision"):
                device_hex = json.loads(out)["device_id"]
            if "onboard" in line:
                assert "onboarded 1 devices" in out and "0 rows failed" in out, out
            if line.startswith("diams-agent run"):
                did = bytes.fromhex(device_hex)
                assert await eventually(lambda: did in gw.traffic.sessions, 30), (
                    work / "agent.log"
                ).read_text()
        assert "authenticated" in out  # the last command: the audit records of the device

        # clones: the device's secret copied twice while the genuine one is off; the copy that is behind
        # answers the gateway's probe, which is how a gateway knows that two devices hold one secret
        shell.stop_background()
        bundle = OwnerBundle.load(work / "factory" / f"{device_hex}.owner.json")
        from firmware_sim.device import SimDevice

        port = s.broker.port  # type: ignore[attr-defined]
        ahead, behind = (
            SimDevice(bundle.device(), gateway_id="gw-1", host="127.0.0.1", port=port) for _ in "ab"
        )
        await ahead.connect()
        for _ in range(2):
            assert isinstance(await ahead.authenticate(), events.Authenticated)
        await ahead.close()  # one connection per device id at the broker: they take turns
        await behind.connect()
        result = await behind.authenticate()
        assert isinstance(result, events.Rejected) and result.reason == "clone", result
        await behind.close()
        assert await eventually(lambda: gw.metrics.get("clone_detected") == 1)
        assert await eventually(lambda: not gw.devices.entries[did].active)

        outputs = [await shell.run(line) for line in recipe("recover")]
        assert "clone_detected" in outputs[0] and "CloneAlert" in outputs[0], outputs[0]
        assert outputs[1].count("ok: tx") == 2 and "is Active" in outputs[1]
        assert "state         Active" in outputs[2]

        # the genuine device comes back
        sessions_before = gw.metrics.get("authenticated")
        await shell.run(f"diams-agent run --config factory/{device_hex}.agent.toml")
        assert await eventually(
            lambda: gw.devices.entries.get(did) is not None and gw.devices.entries[did].active, 30
        )
        assert await eventually(lambda: gw.metrics.get("authenticated") > sessions_before, 60), (
            work / "agent.log"
        ).read_text()
    finally:
        shell.stop_background()
