"""The device proves it stored S' (DONE) before the new owner's tool records ``confirmRekey``
(docs/PROTOCOL.md 2.3), over MQTT end to end: a real Mosquitto enforced by a real gateway daemon
(its ledger an anvil node that the ``diams-ledger`` commands reach too) and the real paho agent.

A device that dies during the exchange is simulated at the exact point inside the real agent: its
re-key handler (``RekeyResponder``) is wrapped so that, on CONFIRM, the agent stops there, before or
after the real commit of S' to its key file, and sends nothing more (as a process killed there would);
then a fresh agent is started from the same files, as the restarted device. Without DONE, the first
``rekey`` recorded ``confirmRekey`` once CONFIRM was sent: that closed the re-key window, the gateway
removed the device's re-key login, and the device killed before its commit (still holding S) had no
broker login left for the owner's retry: locked out."""

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
from device_agent.agent.rekey import RekeyResponder
from device_agent.core import rekey
from firmware_sim.agents import running
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

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]
PASS = "correct horse battery staple"
GW = "gw-a"
TIMEOUT = "12"  # seconds `rekey` waits for each answer (a wrong candidate secret costs one)


async def ledger_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


class Crashing:
    """The agent's re-key handler, dying at ``point`` when CONFIRM arrives: "before_confirm" (before it
    is even read), "before_commit" (CONFIRM verified, S' in memory, S still on disk) or "after_commit"
    (the real commit of S' ran; DONE never leaves). The agent is stopped there and answers nothing more,
    like a process killed at that instant."""

    def __init__(self, real: RekeyResponder, agent: MqttAgent, point: str) -> None:
        self.real, self.agent, self.point = real, agent, point
        self.dead = False

    def message(self, secret: bytes, payload: bytes) -> tuple[bytes | None, bytes | None]:
        if self.dead:
            return None, None
        if payload[:1] == bytes((rekey.CONFIRM,)):
            if self.point == "before_commit":  # CONFIRM verified, S' in memory only
                role = self.real._role
                assert role is not None
                role.confirm(payload)
            if self.point == "after_commit":
                done, new_secret = self.real.message(secret, payload)
                assert done is not None and new_secret is not None  # committed to the key file
            self.dead = True
            self.agent.stop()
            return None, None
        return self.real.message(secret, payload)


class Forging:
    """The path between the device and the owner's tool rewrites the device's DONE: with one made from
    S over this run's transcript (all of it public: what a previous owner computes), or with a DONE
    captured from an earlier run. The device itself runs unchanged (it commits S')."""

    def __init__(self, real: RekeyResponder, device_id: bytes, device_public: bytes) -> None:
        self.real, self.device_id, self.public = real, device_id, device_public
        self.mode = "from_s"
        self.seen: dict[str, bytes] = {}
        self.genuine: list[bytes] = []
        self.forged: list[bytes] = []

    def message(self, secret: bytes, payload: bytes) -> tuple[bytes | None, bytes | None]:
        answer, new_secret = self.real.message(secret, payload)
        if payload[:1] == bytes((rekey.INIT,)):
            assert answer is not None
            self.seen = {"init": payload, "reply": answer, "secret": secret}
        if payload[:1] == bytes((rekey.CONFIRM,)) and answer is not None:
            self.genuine.append(answer)
            if self.mode == "from_s":
                init, reply = self.seen["init"], self.seen["reply"]
                epoch = int.from_bytes(init[1:5], "big")
                t = rekey._transcript(
                    self.device_id, epoch, self.public, init[5:37], reply[1:33], init[37:53], reply[33:49]
                )
                answer = bytes((rekey.DONE,)) + rekey._done_tag(self.seen["secret"], t)
            elif self.mode == "replay":
                answer = self.genuine[0]
            self.forged.append(answer)
        return answer, new_secret


@dataclass
class Transferred:
    """A device taken into service by its first owner, transferred, accepted by the new owner (re-key
    pending), its bundle handed over; the agent's config; ``rekey`` runs the new owner's command."""

    s: Any
    ledger: Ledger
    config: AgentConfig
    did: bytes
    bundle: Path
    old_secret: bytes
    public: bytes
    ch: tuple[str, ...]
    rekey_argv: tuple[str, ...]

    def agent(self) -> MqttAgent:
        """The device, (re)started from its files."""
        return MqttAgent(self.config, load_secret(self.config.key_file))

    def held(self) -> bytes:
        return load_secret(self.config.key_file).reveal()

    def bundle_secret(self) -> bytes:
        return bytes.fromhex(json.loads(self.bundle.read_text())["rekeyed_secret"])

    async def pending(self) -> bool:
        return (await self.ledger.device_key(self.did))[1]


@asynccontextmanager
async def transferred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Transferred]:
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil)")
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    monkeypatch.setattr("ledger_bridge.keystore.MIN_SCRYPT_N", 1024)  # tests only: the floor is 2**18
    with AnvilNode() as node:
        async with site(
            tmp_path, n_devices=0, gateway_ids=(GW,), ledger_backend=RpcBackend(url=node.url, name="anvil")
        ) as s:
            port, ledger = s.broker.port, s.ledger
            channel = tmp_path / "channel.json"
            channel.write_text(json.dumps({"registry": ledger.channel.registry,
                                           "auth_log": ledger.channel.auth_log,
                                           "deployed_block": ledger.channel.deployed_block}))
            ch = ("--rpc", node.url, "--channel", str(channel))
            new_owner_key = tmp_path / "new_owner.json"
            code, new_owner_address, err = await ledger_cli(
                capsys, "keys", "create", "--out", str(new_owner_key), "--scrypt-n", "1024"
            )
            assert code == 0, err
            await ledger.fund(new_owner_address.strip(), 10**19)
            gw_password = private_file(tmp_path / "gw.password", s.secrets[GW] + "\n")
            fw = tmp_path / "fw.bin"
            fw.write_bytes(b"firmware 1")
            done = provision(
                model="pi-sensor", serial="SN-1", mac="02:00:00:00:00:01", firmware=fw,
                out=tmp_path / "factory", gateways=(GW,), broker_port=port,
            )
            did = bytes.fromhex(done.record.device_id)
            rows, bad = read_rows(done.csv_file)
            assert bad == []
            report = await register_rows(s.actors["manufacturer"], rows)
            assert report.errors == [] and report.registered == 1
            owner_bundle = json.loads(done.owner_file.read_text())
            identity = device_from_owner_bundle(owner_bundle)
            owner = s.actors["owner"]
            await owner.onboard_many([did], [identity.claim_code], s.policy_id)
            boxes, commitments = sealed_grants([identity], s.keys[GW], 0)
            await owner.authorize_gateway_many(
                onchain_gateway_id(GW.encode()), device_ids=[did], sealed_keys=boxes,
                key_commitments=commitments,
            )  # fmt: skip
            config = replace(
                load_config(done.config_file),
                answer_timeout_s=0.5, backoff_base_s=0.2, backoff_cap_s=0.5, reconnect_base_s=0.2,
            )
            await owner.transfer(did, new_owner_address.strip())
            code, _, err = await ledger_cli(
                capsys, *ch, "--keystore", str(new_owner_key), "accept-transfer", did.hex()
            )
            assert code == 0, err
            bundle = tmp_path / "new_owner" / done.owner_file.name
            bundle.parent.mkdir()
            bundle.write_bytes(done.owner_file.read_bytes())  # handed over with the device
            bundle.chmod(0o600)
            public, pending = await ledger.device_key(did)
            assert pending
            yield Transferred(
                s=s, ledger=ledger, config=config, did=did, bundle=bundle,
                old_secret=bytes.fromhex(owner_bundle["secret"]), public=public, ch=ch,
                rekey_argv=(
                    *ch, "--keystore", str(new_owner_key), "rekey", did.hex(), "--bundle", str(bundle),
                    "--broker", f"127.0.0.1:{port}", "--gateway", GW, "--broker-username", f"gateway-{GW}.1",
                    "--broker-password-file", gw_password, "--timeout", TIMEOUT,
                ),
            )  # fmt: skip


async def served_after_authorization(
    t: Transferred, capsys: pytest.CaptureFixture[str], agent: MqttAgent
) -> None:
    """The new owner authorizes the gateway from the bundle (keys from S'): the agent is served."""
    keystore = t.rekey_argv[t.rekey_argv.index("--keystore") + 1]
    authorize = ("authorize-gateway", t.did.hex(), GW, "--bundle", str(t.bundle))
    for argv in (authorize, ("activate", t.did.hex())):
        code, _, err = await ledger_cli(capsys, *t.ch, "--keystore", keystore, *argv)
        assert code == 0, err
    _, epoch = await t.ledger.device_state(t.did)
    assert await eventually(
        lambda: agent.snapshot().gateway == GW and agent.snapshot().epoch == epoch, 30
    ), agent.snapshot().stats


@pytest.mark.timeout(600)
@pytest.mark.parametrize("point", ["before_confirm", "before_commit", "after_commit"])
async def test_a_device_killed_after_confirm_over_mqtt_is_not_locked_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """Killed before CONFIRM is read or between CONFIRM and its commit (it keeps S), or after its commit
    but before DONE (it holds S'): no DONE, so the owner's tool records nothing; the re-key window stays
    open, the restarted device logs in again, and the owner's retry (S' first, then S, each with its own
    startRekey login) ends with the device on the owner's new secret, confirmed on chain, and served by
    the gateway."""
    async with transferred(tmp_path, capsys, monkeypatch) as t:
        agent = t.agent()
        crash = Crashing(agent.driver._rekey, agent, point)  # type: ignore[arg-type]
        agent.driver._rekey = crash  # type: ignore[assignment]
        with running(agent):
            code, out, err = await ledger_cli(capsys, *t.rekey_argv)
        assert crash.dead, "CONFIRM never reached the device"
        assert code == 1 and "no DONE" in err, (out, err)
        assert await t.pending(), "confirmRekey recorded without the device's proof of commit"
        kept = t.bundle_secret()  # S', stored before CONFIRM left
        assert t.held() == (kept if point == "after_commit" else t.old_secret)
        _, epoch_before = await t.ledger.device_state(t.did)

        agent = t.agent()  # the device restarts, holding S, or S' (after_commit)
        with running(agent):
            code, out, err = await ledger_cli(capsys, *t.rekey_argv)  # the owner's retry
            assert code == 0, err
            assert "re-keyed" in out
            final = t.bundle_secret()
            assert await eventually(lambda: agent.snapshot().stats.get("rekeyed") == 1, 10)
            assert t.held() == final and final not in (t.old_secret, kept)
            assert not await t.pending()
            _, epoch = await t.ledger.device_state(t.did)
            assert epoch == epoch_before + 1
            await served_after_authorization(t, capsys, agent)


@pytest.mark.timeout(600)
async def test_a_forged_or_replayed_done_is_refused_and_nothing_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DONE made from S over the (public) transcript, then a genuine DONE of an earlier run replayed:
    each is refused (bad_done) and confirmRekey is not recorded; the next honest run completes."""
    async with transferred(tmp_path, capsys, monkeypatch) as t:
        agent = t.agent()
        forging = Forging(agent.driver._rekey, t.did, t.public)  # type: ignore[arg-type]
        agent.driver._rekey = forging  # type: ignore[assignment]
        with running(agent):
            for mode in ("from_s", "replay"):
                forging.mode = mode
                code, out, err = await ledger_cli(capsys, *t.rekey_argv)
                assert code == 1 and "bad_done" in err, (mode, out, err)
                assert await t.pending(), f"confirmRekey recorded on a {mode} DONE"
                assert t.held() == t.bundle_secret()  # the device did commit; only DONE was forged
            assert len(forging.genuine) == 2 and forging.forged[1] == forging.genuine[0] != forging.genuine[1]
            assert forging.forged[0] not in forging.genuine
            forging.mode = "honest"
            code, out, err = await ledger_cli(capsys, *t.rekey_argv)
            assert code == 0, err
            assert not await t.pending()
            assert t.held() == t.bundle_secret() != t.old_secret
            await served_after_authorization(t, capsys, agent)
