"""The set-up the re-key tests over MQTT share (test_rekey_mqtt.py, test_rekey_mqtt_done.py): a real
Mosquitto enforced by a real gateway daemon whose ledger is an anvil node that the ``diams-ledger``
commands reach too, and one device made by ``diams-agent provision``, registered by the manufacturer's
import (its device key too), taken into service by its first owner with the gateway; then transferred to
a new owner who accepts it on the command line and receives its owner bundle (a re-key is then due)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from device_agent.agent.config import AgentConfig, load_config
from device_agent.agent.keystore import load_secret
from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.provision import provision
from ledger_bridge import RpcBackend, cli
from ledger_bridge.anvil import AnvilNode, anvil_binary
from ledger_bridge.csv_import import read_rows, register_rows
from ledger_bridge.enrollment import sealed_grants
from ledger_bridge.firmware import device_from_owner_bundle
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.ledger import Ledger
from tests.conftest import require
from tests.gateway.stack import site
from tests.waiting import eventually

PASS = "correct horse battery staple"
TIMEOUT = "12"  # seconds `rekey` waits for each answer (a wrong candidate secret costs one)


async def ledger_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@dataclass
class RekeySite:
    """The site (``s``: tests.gateway.stack), its ledger and the device in service with gateway ``gw``;
    ``first_bundle`` is what its first owner received; ``bundle`` the new owner's copy (after `transfer`);
    ``ch`` the ``diams-ledger`` options that reach the chain."""

    s: Any
    ledger: Ledger
    gw: str
    config: AgentConfig
    did: bytes
    first_bundle: dict[str, Any]
    factory_bundle: Path
    ch: tuple[str, ...]
    new_owner_key: Path
    new_owner_address: str
    gw_password: str
    bundle: Path
    public: bytes = b""  # the device key, read from the chain at transfer

    @property
    def old_secret(self) -> bytes:
        return bytes.fromhex(self.first_bundle["secret"])

    @property
    def port(self) -> int:
        return int(self.s.broker.port)

    def agent(self) -> MqttAgent:
        """The device, (re)started from its files."""
        return MqttAgent(self.config, load_secret(self.config.key_file))

    def held(self) -> bytes:
        return load_secret(self.config.key_file).reveal()

    def bundle_secret(self) -> bytes:
        return bytes.fromhex(json.loads(self.bundle.read_text())["rekeyed_secret"])

    async def pending(self) -> bool:
        return (await self.ledger.device_key(self.did))[1]

    async def transfer(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The first owner transfers the device; the new owner accepts on the command line (a re-key is
        due from then on) and receives the owner bundle with the device."""
        await self.s.actors["owner"].transfer(self.did, self.new_owner_address)
        code, _, err = await ledger_cli(
            capsys, *self.ch, "--keystore", str(self.new_owner_key), "accept-transfer", self.did.hex()
        )
        assert code == 0, err
        self.bundle.parent.mkdir()
        self.bundle.write_bytes(self.factory_bundle.read_bytes())  # handed over with the device
        self.bundle.chmod(0o600)
        self.public, pending = await self.ledger.device_key(self.did)
        assert pending

    def rekey_argv(self, timeout: str = TIMEOUT) -> tuple[str, ...]:
        """The new owner's `diams-ledger rekey`, over the broker with the gateway's spare account."""
        return (
            *self.ch, "--keystore", str(self.new_owner_key), "rekey", self.did.hex(),
            "--bundle", str(self.bundle), "--broker", f"127.0.0.1:{self.port}", "--gateway", self.gw,
            "--broker-username", f"gateway-{self.gw}.1", "--broker-password-file", self.gw_password,
            "--timeout", timeout,
        )  # fmt: skip


@asynccontextmanager
async def device_in_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, gw: str
) -> AsyncIterator[RekeySite]:
    """The site with the device in service with ``gw`` under its first owner (not yet transferred)."""
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil)")
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    monkeypatch.setattr("ledger_bridge.keystore.MIN_SCRYPT_N", 1024)  # tests only: the floor is 2**18
    with AnvilNode() as node:
        async with site(
            tmp_path, n_devices=0, gateway_ids=(gw,), ledger_backend=RpcBackend(url=node.url, name="anvil")
        ) as s:
            ledger = s.ledger
            channel = tmp_path / "channel.json"
            channel.write_text(json.dumps({"registry": ledger.channel.registry,
                                           "auth_log": ledger.channel.auth_log,
                                           "deployed_block": ledger.channel.deployed_block}))
            ch = ("--rpc", node.url, "--channel", str(channel))
            # the new owner acts from its own keystore, on the command line
            new_owner_key = tmp_path / "new_owner.json"
            code, new_owner_address, err = await ledger_cli(
                capsys, "keys", "create", "--out", str(new_owner_key), "--scrypt-n", "1024"
            )
            assert code == 0, err
            await ledger.fund(new_owner_address.strip(), 10**19)
            gw_password = private_file(tmp_path / "gw.password", s.secrets[gw] + "\n")

            # manufacture: provisioning makes S and the device key; the import registers both
            fw = tmp_path / "fw.bin"
            fw.write_bytes(b"firmware 1")
            done = provision(
                model="pi-sensor", serial="SN-1", mac="02:00:00:00:00:01", firmware=fw,
                out=tmp_path / "factory", gateways=(gw,), broker_port=s.broker.port,
            )
            did = bytes.fromhex(done.record.device_id)
            rows, bad = read_rows(done.csv_file)
            assert bad == []
            report = await register_rows(s.actors["manufacturer"], rows)
            assert report.errors == [] and report.registered == 1
            assert await ledger.device_key(did) == (bytes.fromhex(done.record.device_key[2:]), False)

            # the first owner takes it into service with the gateway
            first_bundle = json.loads(done.owner_file.read_text())
            identity = device_from_owner_bundle(first_bundle)
            owner = s.actors["owner"]
            await owner.onboard_many([did], [identity.claim_code], s.policy_id)
            boxes, commitments = sealed_grants([identity], s.keys[gw], 0)
            await owner.authorize_gateway_many(
                onchain_gateway_id(gw.encode()), device_ids=[did], sealed_keys=boxes,
                key_commitments=commitments,
            )  # fmt: skip
            config = replace(
                load_config(done.config_file),
                answer_timeout_s=0.5, backoff_base_s=0.2, backoff_cap_s=0.5, reconnect_base_s=0.2,
            )
            yield RekeySite(
                s=s, ledger=ledger, gw=gw, config=config, did=did, first_bundle=first_bundle,
                factory_bundle=done.owner_file, ch=ch, new_owner_key=new_owner_key,
                new_owner_address=new_owner_address.strip(), gw_password=gw_password,
                bundle=tmp_path / "new_owner" / done.owner_file.name,
            )  # fmt: skip


@asynccontextmanager
async def transferred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, gw: str
) -> AsyncIterator[RekeySite]:
    """The device in service, then transferred and accepted by the new owner (re-key pending), its
    bundle handed over."""
    async with device_in_service(tmp_path, capsys, monkeypatch, gw) as t:
        await t.transfer(capsys)
        yield t


async def served_after_authorization(
    t: RekeySite, capsys: pytest.CaptureFixture[str], agent: MqttAgent
) -> None:
    """The new owner authorizes the gateway from the bundle (keys from S') and activates: the agent is
    served by it under the device's epoch now."""
    authorize = ("authorize-gateway", t.did.hex(), t.gw, "--bundle", str(t.bundle))
    for argv in (authorize, ("activate", t.did.hex())):
        code, _, err = await ledger_cli(capsys, *t.ch, "--keystore", str(t.new_owner_key), *argv)
        assert code == 0, err
    _, epoch = await t.ledger.device_state(t.did)
    assert await eventually(
        lambda: agent.snapshot().gateway == t.gw and agent.snapshot().epoch == epoch, 30
    ), agent.snapshot().stats
