"""Re-keying at transfer over MQTT, end to end (issue 10, item 1; docs/PROTOCOL.md 2.3): a real
Mosquitto enforced by the gateway's broker enforcer (its ACL gives the re-key topics to the device and
to the gateway's account only), the durable embedded chain driven by `diams-ledger` commands, the real
paho agent, and a gateway role on the broker.

The manufacturer's `register --csv` registers the device key that `diams-agent provision` made; after
transfer the new owner's one command, `diams-ledger rekey`, runs the exchange with the running agent
through the broker; the previous owner, who still holds S, is then refused by the broker and by the
gateway, and cannot start another re-key."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.agent.config import load_config
from device_agent.agent.keystore import load_secret
from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.provision import provision
from device_agent.agent.x25519 import x25519
from device_agent.core import device, keys, rekey, topics
from device_agent.core.gateway import DeviceEntry
from firmware_sim.agents import running
from firmware_sim.broker import mosquitto_binary
from firmware_sim.responder import Responder
from gateway.broker import AuthorizeGateway, BrokerSecret, Enroll
from ledger_bridge import Ledger, cli
from ledger_bridge.embedded import EmbeddedBackend
from ledger_bridge.model import Channel
from ledger_bridge.sealing import generate_gateway_key, load_gateway_key, unseal
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require
from tests.waiting import eventually

from .test_cli_workflow import world  # noqa: F401 - the fixture: a channel and each actor's keystore

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]
GW = "gw-test"  # tests.broker.conftest's gateway


async def ledger_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def mqtt_login(port: int, username: str, password: str) -> bool:
    """Does the broker accept this login? (a raw paho connect, no loop thread)"""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311)
    client.username_pw_set(username, password)
    result: list[bool] = []
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        for _ in range(100):
            client.loop(timeout=0.05)
            if result:
                break
    finally:
        client.disconnect()
        client._reset_sockets()
    return bool(result and result[0])


class PreviousOwnerInit:
    """The previous owner (knows S) sends its own INIT on the device's re-key topic, via a gateway login."""

    def __init__(self, port: int, username: str, password: str, device_id: bytes, secret: bytes) -> None:
        self.role = rekey.OwnerRekey(device_id, 0, secret, os.urandom(32), x25519, os.urandom)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311)
        self.client.username_pw_set(username, password)
        self.replies: list[bytes] = []
        self.client.on_message = lambda c, u, msg: self.replies.append(bytes(msg.payload))
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topics.rekey_up(GW, device_id.hex()), qos=1)
        assert self.subscribed.wait(5)
        self.device_hex = device_id.hex()

    def send_init(self, epoch: int) -> None:
        self.role.epoch = epoch
        self.client.publish(
            topics.rekey_down(GW, self.device_hex), self.role.start(), qos=1
        ).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


async def test_rekey_over_mqtt_and_the_previous_owner_is_out(
    tmp_path: Path,
    world: dict[str, Any],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    ch: tuple[str, ...] = world["ch"]
    k: dict[str, tuple[str, str]] = world["keys"]
    # the new owner's own keystore
    new_owner_key = tmp_path / "new_owner.json"
    code, new_owner_address, _ = await ledger_cli(
        capsys, "keys", "create", "--out", str(new_owner_key), "--scrypt-n", "1024"
    )
    new_owner_address = new_owner_address.strip()
    assert (await ledger_cli(capsys, *ch[:2], "fund", new_owner_address))[0] == 0

    async with running_enforced_broker() as eb:
        port = eb.broker.port
        # a spare account of the gateway for the owner's tool (its live connection keeps gateway-gw-test)
        await eb.enforcer.apply([AuthorizeGateway(gateway_id=GW, secret=eb.gateway_secret, connections=2)])
        await eb.enforcer.flush()
        gw_password = private_file(tmp_path / "gw.password", eb.gateway_secret.reveal() + "\n")

        # manufacture: provisioning makes S and the device key; `register --csv` registers both
        fw = tmp_path / "fw.bin"
        fw.write_bytes(b"firmware 1")
        done = provision(
            model="pi-sensor",
            serial="SN-1",
            mac="02:00:00:00:00:01",
            firmware=fw,
            out=tmp_path / "factory",
            gateways=(GW,),
            broker_port=port,
        )
        did_hex = done.record.device_id
        did = bytes.fromhex(did_hex)
        assert (Path(str(done.key_file) + ".x25519").stat().st_mode & 0o777) == 0o600
        code, out, err = await ledger_cli(
            capsys, *ch, "--keystore", k["manufacturer"][0], "register", "--csv", str(done.csv_file)
        )
        assert code == 0, err
        owner_bundle = json.loads(done.owner_file.read_text())
        old_secret = bytes.fromhex(owner_bundle["secret"])

        channel = Channel(**json.loads(world["channel"].read_text()))

        async def chain(fn: Any) -> Any:
            async with Ledger(backend=EmbeddedBackend(world["chain"]), channel=channel) as ledger:
                return await fn(ledger)

        assert await chain(lambda led: led.device_key(did)) == (
            bytes.fromhex(done.record.device_key[2:]),
            False,
        )

        # the previous owner claims and uses the device, then transfers it; the new owner accepts
        code_file = private_file(tmp_path / "claim.code", owner_bundle["claim_code"] + "\n")
        for argv in (
            ("claim", did_hex, "--code-file", code_file),
            ("activate", did_hex),
            ("transfer", did_hex, new_owner_address),
        ):
            code, _, err = await ledger_cli(capsys, *ch, "--keystore", k["owner"][0], *argv)
            assert code == 0, err
        code, _, err = await ledger_cli(
            capsys, *ch, "--keystore", str(new_owner_key), "accept-transfer", did_hex
        )
        assert code == 0, err
        gw_pub = generate_gateway_key(tmp_path / "gw.key")
        code, _, err = await ledger_cli(
            capsys,
            *ch,
            "--keystore",
            k["operator"][0],
            "register-gateway",
            GW,
            "--x25519",
            gw_pub.hex(),
            "--account",
            k["gateway"][1],
        )
        assert code == 0, err
        new_bundle = tmp_path / "new_owner" / done.owner_file.name
        new_bundle.parent.mkdir()
        shutil.copy(done.owner_file, new_bundle)  # handed over with the device (S and the claim code)
        new_bundle.chmod(0o600)
        # no gateway before the re-key
        code, _, err = await ledger_cli(
            capsys,
            *ch,
            "--keystore",
            str(new_owner_key),
            "authorize-gateway",
            did_hex,
            GW,
            "--bundle",
            str(new_bundle),
        )
        assert code == 1 and "RekeyPending" in err

        # the device is on the site's broker (enrolled with its password P from S, as before the transfer)
        await eb.enforcer.apply(
            [Enroll(device_id=did_hex, secret=BrokerSecret(keys.broker_password(old_secret, did)))]
        )
        await eb.enforcer.flush()
        config = replace(
            load_config(done.config_file),
            answer_timeout_s=0.5,
            backoff_base_s=0.2,
            backoff_cap_s=0.5,
            reconnect_base_s=0.2,
        )
        agent = MqttAgent(config, load_secret(config.key_file))
        with running(agent):
            assert await eventually(lambda: agent.snapshot().connected, 10), "the agent did not connect"
            _, epoch_at_transfer = await chain(lambda led: led.device_state(did))

            # a stranger's INIT (without S) through the gateway's account: refused, nothing changes
            stranger = PreviousOwnerInit(
                port, f"gateway-{GW}.1", eb.gateway_secret.reveal(), did, os.urandom(32)
            )
            stranger.send_init(epoch_at_transfer)
            assert await eventually(lambda: agent.snapshot().stats.get("rekey_refused_bad_init") == 1, 5)
            stranger.close()

            # the new owner's one command, over the broker with the gateway's spare account
            code, out, err = await ledger_cli(
                capsys,
                *ch,
                "--keystore",
                str(new_owner_key),
                "rekey",
                did_hex,
                "--bundle",
                str(new_bundle),
                "--broker",
                f"127.0.0.1:{port}",
                "--gateway",
                GW,
                "--broker-username",
                f"gateway-{GW}.1",
                "--broker-password-file",
                gw_password,
                "--timeout",
                "10",
            )
            assert code == 0, err
            assert "re-keyed" in out
            new_secret = bytes.fromhex(json.loads(new_bundle.read_text())["rekeyed_secret"])
            assert new_secret != old_secret
            assert new_secret.hex() not in out + err and old_secret.hex() not in out + err
            assert await eventually(lambda: agent.snapshot().stats.get("rekeyed") == 1, 5)
            assert load_secret(config.key_file).reveal() == new_secret
            assert (config.key_file.stat().st_mode & 0o777) == 0o600
            _, epoch = await chain(lambda led: led.device_state(did))
            assert epoch == epoch_at_transfer + 1
            assert (await chain(lambda led: led.device_key(did)))[1] is False  # re-key no longer pending

            # the new owner authorizes the gateway from the bundle: the sealed box carries keys from S'
            code, _, err = await ledger_cli(
                capsys,
                *ch,
                "--keystore",
                str(new_owner_key),
                "authorize-gateway",
                did_hex,
                GW,
                "--bundle",
                str(new_bundle),
            )
            assert code == 0, err
            grant = await chain(lambda led: led.grant(did, GW.encode().ljust(32, b"\0")))
            opened = unseal(
                grant.sealed_key,
                load_gateway_key(tmp_path / "gw.key"),
                did,
                GW.encode(),
                epoch,
                grant.key_commitment,
            )
            fw_hash = bytes.fromhex(owner_bundle["firmware_hash"])
            assert opened.k_dg == keys.gateway_key(new_secret, did, GW.encode(), epoch, fw_hash)
            assert opened.k_dg != keys.gateway_key(old_secret, did, GW.encode(), epoch, fw_hash)
            # the gateway enrolls the device with the password in the box (from S'): the broker drops
            # the connection made with P from S, and the agent logs in again with P'
            await eb.enforcer.apply(
                [Enroll(device_id=did_hex, secret=BrokerSecret(opened.broker_password.hex()))]
            )
            await eb.enforcer.flush()

            gateway = Responder(
                "127.0.0.1", port, GW, {did: DeviceEntry(did, opened.k_dg, epoch, lifetime=600)}
            )
            gateway.client.username_pw_set(f"gateway-{GW}", eb.gateway_secret.reveal())
            with gateway:
                assert await eventually(lambda: agent.snapshot().gateway == GW, 20), agent.snapshot().stats
                assert gateway.authentications == 1

                # the previous owner, with S: its broker password is refused ...
                assert not mqtt_login(port, did_hex, keys.broker_password(old_secret, did))
                assert mqtt_login(port, f"gateway-{GW}.1", eb.gateway_secret.reveal())  # (logins do work)
                # ... and were it on the path with a login, its HELLO under K_dg from S is refused by
                # the gateway's role (handed to it directly: no login of its own reaches the topic)
                old_k_dg = keys.gateway_key(old_secret, did, GW.encode(), epoch, fw_hash)
                hello = device.DeviceRole(did, GW.encode(), old_k_dg, epoch).hello(10**6, os.urandom(8))
                with gateway._lock:
                    _, events = gateway.role.receive(did, hello, 0.0)
                assert [(type(e).__name__, e.reason) for e in events] == [("Rejected", "bad_otp")]
                assert gateway.authentications == 1

            # and it cannot start another re-key: its INIT is keyed by S, the device holds S'
            previous = PreviousOwnerInit(port, f"gateway-{GW}.1", eb.gateway_secret.reveal(), did, old_secret)
            previous.send_init(epoch)
            assert await eventually(lambda: agent.snapshot().stats.get("rekey_refused_bad_init") == 2, 5)
            assert previous.replies == []
            previous.close()
            assert load_secret(config.key_file).reveal() == new_secret


async def test_the_broker_gives_the_rekey_topics_to_the_device_and_its_gateway_only(tmp_path: Path) -> None:
    """Another device can neither read a device's re-key exchange nor answer in its place: only the
    device and the gateway's account reach its re-key topics (the ACL that gateway/broker writes)."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker() as eb:
        a, b = "0123456789abcdef", "fedcba9876543210"
        pw = {d: BrokerSecret.generate() for d in (a, b)}
        await eb.enforcer.apply([Enroll(device_id=d, secret=s) for d, s in pw.items()])
        await eb.enforcer.flush()
        acl = eb.enforcer.acl_file.read_text()
        assert f"pattern write {topics.topic_filter(topics.REKEY, GW, topics.USER, topics.UP)}" in acl
        assert f"topic write {topics.topic_filter(topics.REKEY, GW, topics.ANY, topics.DOWN)}" in acl

        got: dict[str, list[bytes]] = {a: [], b: [], GW: []}
        clients = {}
        logins = {
            a: (a, pw[a].reveal()),
            b: (b, pw[b].reveal()),
            GW: (f"gateway-{GW}", eb.gateway_secret.reveal()),
        }
        for who, (user, password) in logins.items():
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=paho.MQTTv311)
            c.username_pw_set(user, password)
            c.on_message = lambda cl, u, msg, who=who: got[who].append(bytes(msg.payload))
            c.connect("127.0.0.1", eb.broker.port)
            c.loop_start()
            clients[who] = c
        clients[a].subscribe(topics.rekey_down(GW, a), qos=1)
        clients[b].subscribe(topics.rekey_down(GW, a), qos=1)  # b listens in on a's exchange
        clients[b].subscribe(topics.rekey_up(GW, a), qos=1)
        clients[GW].subscribe(topics.rekey_up(GW, a), qos=1)
        await asyncio.sleep(0.3)
        clients[b].publish(topics.rekey_down(GW, a), b"forged init", qos=1)  # b plays the owner's tool
        clients[b].publish(topics.rekey_up(GW, a), b"forged reply", qos=1)  # b answers in a's place
        await asyncio.sleep(0.3)
        clients[GW].publish(topics.rekey_down(GW, a), b"init", qos=1).wait_for_publish(5)
        assert await eventually(lambda: got[a] == [b"init"], 5)
        clients[a].publish(topics.rekey_up(GW, a), b"reply", qos=1).wait_for_publish(5)
        assert await eventually(lambda: got[GW] == [b"reply"], 5)
        await asyncio.sleep(0.3)
        assert got == {a: [b"init"], b: [], GW: [b"reply"]}
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
            c._reset_sockets()


NOT_AUTHORIZED = 135
NO_SUBSCRIBERS = 16  # accepted, nobody listening


@pytest.mark.parametrize("rights", ["patterns", "per_device"])
async def test_in_the_rekey_window_the_device_reaches_its_rekey_topics_with_one_gateway_only(rights: str) -> None:
    """The REKEYING account (EnrollRekey) on the real Mosquitto: a login with P from S reaches the device's
    two re-key topics with the gateway named to carry the re-key, and no handshake, data, command or other
    gateway's re-key topic; it cannot be granted data; the ordinary enrolment replaces it."""
    require(mosquitto_binary() is not None, "mosquitto")
    from gateway.broker import CutOff, EnrollRekey, Grant, UnknownDevice
    from tests.broker.clients import Probe

    async with running_enforced_broker(rights=rights) as eb:
        d = "00000000000000d7"
        window, later = BrokerSecret.generate(), BrokerSecret.generate()
        other = "gw-other"
        await eb.enforcer.apply(
            [
                AuthorizeGateway(gateway_id=other, secret=BrokerSecret.generate()),
                EnrollRekey(device_id=d, gateway_id=GW, secret=window),
            ]
        )
        assert eb.enforcer.state_of(d) == "rekeying"
        gateway = Probe(eb.broker, f"gateway-{GW}", eb.gateway_secret.reveal())
        assert gateway.connect() == 0
        gateway.subscribe(topics.rekey_up(GW, d), topics.handshake_up(GW, d), topics.data(GW, d, "temp"))
        device = Probe(eb.broker, d, window.reveal())
        assert device.connect() == 0
        device.subscribe(
            topics.rekey_down(GW, d), topics.handshake_down(GW, d), topics.command(GW, d, "reboot"),
            topics.rekey_down(other, d),
        )
        # its re-key topics with GW, both ways
        assert device.publish(topics.rekey_up(GW, d), b"reply") == 0
        assert gateway.publish(topics.rekey_down(GW, d), b"init") == 0
        # nothing else: handshakes, data, commands, verified, another gateway's re-key topics
        for topic in (
            topics.handshake_up(GW, d),
            topics.data(GW, d, "temp"),
            topics.verified(GW, d, "temp"),
            topics.rekey_up(other, d),
            topics.handshake_up(other, d),
        ):
            assert device.publish(topic, b"x").value == NOT_AUTHORIZED, topic
        gateway.publish(topics.handshake_down(GW, d), b"challenge")
        gateway.publish(topics.command(GW, d, "reboot"), b"c")
        assert [(m.topic, m.payload) for m in device.drain(0.5)] == [(topics.rekey_down(GW, d), b"init")]
        assert [(m.topic, m.payload) for m in gateway.drain(0.3)] == [(topics.rekey_up(GW, d), b"reply")]
        # no data rights while re-keying
        with pytest.raises(UnknownDevice):
            await eb.enforcer.apply([Grant(device_id=d, streams=frozenset({"temp"}))])

        # confirmed and authorized: the ordinary account (a new password) replaces the re-key one
        await eb.enforcer.apply([CutOff(device_id=d), Enroll(device_id=d, secret=later)])
        assert device.disconnected.wait(5), "the re-key login is dropped"
        device.close()
        assert not mqtt_login(eb.broker.port, d, window.reveal())
        device = Probe(eb.broker, d, later.reveal())
        assert device.connect() == 0
        assert device.publish(topics.handshake_up(GW, d), b"hello") == 0
        assert [(m.topic, m.payload) for m in gateway.drain(0.5)] == [(topics.handshake_up(GW, d), b"hello")]
        for probe in (device, gateway):
            probe.close()


async def test_the_http_rights_give_a_rekeying_device_its_rekey_topics_with_one_gateway_only() -> None:
    """The same account on the HTTP endpoint (RabbitMQ, EMQX): the decisions of ``AccessRules``."""
    from gateway.broker import AccessRules, EnrollRekey, Grant, HttpEnforcer, UnknownDevice

    d = "00000000000000d8"
    enforcer = HttpEnforcer(gateway_id=GW, closer=None)
    window = BrokerSecret.generate()
    enforcer.stage([EnrollRekey(device_id=d, gateway_id=GW, secret=window)])
    rules: AccessRules = enforcer.rules
    assert enforcer.state_of(d) == "rekeying"
    assert rules.user(d, window.reveal(), d).allow
    assert not rules.user(d, BrokerSecret.generate().reveal(), d).allow

    def key(topic: str) -> str:
        return topic.replace("/", ".")

    assert rules.topic(d, key(topics.rekey_up(GW, d)), "write").allow
    assert rules.topic(d, key(topics.rekey_down(GW, d)), "read").allow
    assert not rules.topic(d, key(topics.rekey_up(GW, d)), "read").allow
    for topic, permission in (
        (topics.handshake_up(GW, d), "write"),
        (topics.handshake_down(GW, d), "read"),
        (topics.data(GW, d, "temp"), "write"),
        (topics.command(GW, d, "reboot"), "read"),
        (topics.rekey_up("gw-other", d), "write"),
        (topics.rekey_down("gw-other", d), "read"),
    ):
        verdict = rules.topic(d, key(topic), permission)
        assert not verdict.allow and verdict.reason == "rekey_only", topic
    with pytest.raises(UnknownDevice):
        enforcer.stage([Grant(device_id=d, streams=frozenset({"temp"}))])
    # the ordinary enrolment replaces it, and its live connection is closed (the broker cached topics)
    later = BrokerSecret.generate()
    assert enforcer.stage([Enroll(device_id=d, secret=later)]) == [d]
    assert rules.topic(d, key(topics.handshake_up(GW, d)), "write").allow
    assert not rules.user(d, window.reveal(), d).allow
