"""Re-keying at transfer over MQTT, end to end (issue 10, item 1; docs/PROTOCOL.md 2.3): a real
Mosquitto enforced by a real gateway daemon (firmware_sim.inproc, its ledger an anvil node that the
`diams-ledger` commands reach too), the real paho agent, and no step by hand at the broker.

The manufacturer's import registers the device key that `diams-agent provision` made (one
registerDeviceKeyMany per batch); after transfer the agent has no broker login (no gateway serves a
device whose re-key is pending), until the new owner names the gateway that carries the exchange
(startRekey, part of `diams-ledger rekey`): the gateway then gives the device a login for its re-key
topics only, with the password it already has (from S). The previous owner, who holds S too, gets
nothing from that login; after the re-key the gateway serves the device under S' only, and the previous
owner is refused by the broker, by the gateway and by the device."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.x25519 import x25519
from device_agent.core import device, keys, rekey, topics
from firmware_sim.agents import running
from firmware_sim.broker import mosquitto_binary
from gateway.broker import AuthorizeGateway, BrokerSecret, Enroll
from ledger_bridge import Signer
from ledger_bridge.keystore import load_signer
from ledger_bridge.rekey import start_rekey
from tests.broker.clients import Probe
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require
from tests.waiting import eventually

from .rekey_site import PASS, device_in_service, ledger_cli, served_after_authorization

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]
GW = "gw-test"  # tests.broker.conftest's gateway


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

    def __init__(
        self, port: int, username: str, password: str, device_id: bytes, secret: bytes, gateway: str = GW
    ) -> None:
        self.role = rekey.OwnerRekey(device_id, 0, secret, os.urandom(32), x25519, os.urandom)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311)
        self.client.username_pw_set(username, password)
        self.replies: list[bytes] = []
        self.client.on_message = lambda c, u, msg: self.replies.append(bytes(msg.payload))
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.gateway = gateway
        self.client.subscribe(topics.rekey_up(gateway, device_id.hex()), qos=1)
        assert self.subscribed.wait(5)
        self.device_hex = device_id.hex()

    def send_init(self, epoch: int) -> None:
        self.role.epoch = epoch
        self.client.publish(
            topics.rekey_down(self.gateway, self.device_hex), self.role.start(), qos=1
        ).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


NOT_AUTHORIZED = 135


@pytest.mark.timeout(600)
async def test_rekey_over_mqtt_with_a_running_gateway_and_the_previous_owner_is_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = "gw-a"
    async with device_in_service(tmp_path, capsys, monkeypatch, gw) as t:
        s, ledger, port, did, did_hex = t.s, t.ledger, t.port, t.did, t.did.hex()
        gateway = s.gateways[gw]
        old_secret, ch, new_owner_key = t.old_secret, t.ch, t.new_owner_key
        # the previous owner took it into service with the gateway: the running agent is served
        agent = t.agent()
        with running(agent):
            assert await eventually(lambda: agent.snapshot().gateway == gw, 20), agent.snapshot().stats

            # transfer: the gateway cuts the device off; nobody serves it while its re-key is pending
            await t.transfer(capsys)
            assert await eventually(lambda: not agent.snapshot().connected, 20), "still connected"
            assert s.enforcer is not None and s.enforcer.state_of(did_hex) == "absent"
            code, _, err = await ledger_cli(
                capsys, *ch, "--keystore", str(new_owner_key),
                "authorize-gateway", did_hex, gw, "--bundle", str(t.bundle),
            )
            assert code == 1 and "RekeyPending" in err  # no gateway before the re-key

            # the new owner names the gateway that carries the re-key (the first thing `rekey` does,
            # here on its own to look at the window): the gateway gives the device a re-key login
            new_owner = ledger.actor(_signer(new_owner_key))
            await start_rekey(ledger, new_owner, did, gw.encode(), secret=old_secret)
            assert await eventually(lambda: agent.snapshot().connected, 20), "no re-key login"
            assert s.enforcer.state_of(did_hex) == "rekeying"
            _, epoch_at_transfer = await ledger.device_state(did)

            # that login gives the previous owner (it knows S, so P) nothing: no handshake, no data
            spy = Probe(s.broker, did_hex, keys.broker_password(old_secret, did, epoch_at_transfer))
            assert spy.connect() == 0
            for topic in (topics.handshake_up(gw, did_hex), topics.data(gw, did_hex, "telemetry")):
                assert spy.publish(topic, b"x").value == NOT_AUTHORIZED, topic
            spy.close()
            assert gateway.devices.entries.get(did) is None  # and no protocol entry to answer it

            # a stranger's INIT (without S) through the gateway's account: refused, nothing changes
            assert await eventually(lambda: agent.snapshot().connected, 20)
            stranger = PreviousOwnerInit(
                port, f"gateway-{gw}.1", s.secrets[gw], did, os.urandom(32), gateway=gw
            )
            assert await refused_init(agent, stranger, epoch_at_transfer)
            stranger.close()

            # the new owner's one command, over the broker with the gateway's spare account
            code, out, err = await ledger_cli(capsys, *t.rekey_argv(timeout="30"))
            assert code == 0, err
            assert "re-keyed" in out
            new_secret = t.bundle_secret()
            assert new_secret != old_secret
            assert new_secret.hex() not in out + err and old_secret.hex() not in out + err
            assert await eventually(lambda: agent.snapshot().stats.get("rekeyed") == 1, 10)
            assert t.held() == new_secret
            assert (t.config.key_file.stat().st_mode & 0o777) == 0o600
            _, epoch = await ledger.device_state(did)
            assert epoch == epoch_at_transfer + 1
            assert (await ledger.device_key(did))[1] is False  # re-key no longer pending
            # the window is closed: the re-key login is gone, and P from S opens nothing
            assert await eventually(
                lambda: s.enforcer is not None and s.enforcer.state_of(did_hex) == "absent", 20
            )
            await s.enforcer.flush()  # live at the broker
            assert not old_logins(port, did_hex, old_secret, epoch)

            # the new owner authorizes the gateway from the bundle (keys from S'): the gateway
            # enrols the device with P from S' and serves it under the new epoch
            await served_after_authorization(t, capsys, agent)

            # the previous owner, with S: its broker password is refused ...
            assert not old_logins(port, did_hex, old_secret, epoch)
            assert mqtt_login(port, f"gateway-{gw}.1", s.secrets[gw])  # (logins do work)
            # ... and were it on the path with a login, its HELLO under K_dg from S is refused by
            # the gateway's role (handed to it directly: no login of its own reaches the topic)
            fw_hash = bytes.fromhex(t.first_bundle["firmware_hash"])
            old_k_dg = keys.gateway_key(old_secret, did, gw.encode(), epoch, fw_hash)
            hello = device.DeviceRole(did, gw.encode(), old_k_dg, epoch).hello(10**6, os.urandom(8))
            _, events = gateway.devices.role.receive(did, hello, 0.0)
            assert [(type(e).__name__, e.reason) for e in events] == [("Rejected", "bad_otp")]

            # and it cannot start another re-key: its INIT is keyed by S, the device holds S'
            previous = PreviousOwnerInit(port, f"gateway-{gw}.1", s.secrets[gw], did, old_secret, gateway=gw)
            assert await refused_init(agent, previous, epoch)
            assert previous.replies == []
            previous.close()
            assert t.held() == new_secret


def old_logins(port: int, device_hex: str, old_secret: bytes, epoch: int) -> bool:
    """Does the broker take P_e from S (the previous owner's) at any epoch up to the next one?"""
    did = bytes.fromhex(device_hex)
    passwords = [keys.broker_password(old_secret, did, e) for e in range(epoch + 2)]
    return any(mqtt_login(port, device_hex, p) for p in passwords)


async def refused_init(agent: MqttAgent, sender: PreviousOwnerInit, epoch: int) -> bool:
    """Send INITs until the agent refuses one (the device may be between connections, e.g. after a login
    with its username elsewhere, when the first arrives)."""
    before = agent.snapshot().stats.get("rekey_refused_bad_init", 0)
    for _ in range(15):
        sender.send_init(epoch)
        if await eventually(lambda: agent.snapshot().stats.get("rekey_refused_bad_init", 0) > before, 1.0):
            return True
    return False


def _signer(path: Path) -> Signer:
    return load_signer(path, PASS)


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
async def test_in_the_rekey_window_the_device_reaches_its_rekey_topics_with_one_gateway_only(
    rights: str,
) -> None:
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
