"""A bound on what one device costs before it authenticates: refused pre-authentication messages (handshakes
past its rate, data without a session) beyond an allowance get the device cut off at the real broker for a
while, then enrolled again; other devices authenticate meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device_agent.core import events, topics
from gateway.defence import PreAuthBan
from gateway.mqtt import MqttConnectError
from gateway.settings import DefenceSettings
from tests.gateway.helpers import eventually, reconnect_after_ban
from tests.gateway.stack import site
from tests.waiting import enrolled_at_broker

pytestmark = pytest.mark.asyncio


async def test_the_allowance_refills_and_a_ban_is_called_once_then_expires() -> None:
    ban = PreAuthBan(rate=10.0, burst=5, ban_seconds=2.0, max_tracked=2, now=0.0)
    d = b"\x01" * 8
    assert [ban.refused(d, 0.0) for _ in range(5)] == [False] * 5
    assert ban.refused(d, 0.5) is False  # 5 tokens back after 0.5 s at 10/s: a steady trickle never bans
    assert [ban.refused(d, 0.5) for _ in range(5)] == [False] * 4 + [True]
    assert ban.banned(d, 1.0) and ban.refused(d, 1.0) is False  # called once per ban
    assert not ban.banned(d, 2.6)
    assert ban.refused(d, 2.6) is False  # a fresh allowance after the ban
    for i in range(5):  # bounded state: the least recently seen devices are forgotten
        ban.refused(bytes([i]) * 8, 3.0)
    assert len(ban._buckets) == 2
    with pytest.raises(ValueError):
        PreAuthBan(rate=0, burst=1, ban_seconds=1, max_tracked=1, now=0.0)


async def test_a_device_flooding_before_it_authenticates_is_cut_off_for_a_while(tmp_path) -> None:
    defence = DefenceSettings(preauth_rate=10.0, preauth_burst=300, preauth_ban=3.0)
    async with site(tmp_path, n_devices=2, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]
        flooder, victim = s.sim(0), s.sim(1)
        for d in (flooder, victim):
            await d.connect()
        topic = str(topics.data("gw-a", flooder.hex, "telemetry"))
        for i in range(3_000):  # no session: each is dropped, and refused against its allowance
            flooder.replay(topic, b"junk %d" % i)
        assert await eventually(lambda: gw.metrics.get("preauth_bans") == 1, 15), dict(gw.metrics.counters)
        banned_at = time.monotonic()
        assert await eventually(lambda: flooder.client.closed.done(), 5), "the broker closed its connection"
        assert '"event":"preauth_flood"' in (gw.settings.state_dir / "audit.log").read_text()
        # the ban's cut-off is confirmed in the broker's log, counted apart from the ledger's cut-offs
        assert await eventually(lambda: gw.metrics.get("cut_off_confirmed", "ban") == 1, 5)
        assert gw.metrics.get("cut_off_confirmed", "ledger") == 0 == gw.metrics.get("cut_off")
        with pytest.raises(MqttConnectError):
            await flooder.connect(timeout=3)
        assert isinstance(await victim.authenticate(), events.Authenticated)
        # the ban ends by itself: enrolled again, it may authenticate
        await reconnect_after_ban(flooder)
        assert time.monotonic() - banned_at >= 2.5
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        assert gw.metrics.get("preauth_bans") == 1
        for d in (flooder, victim):
            await d.close()


async def test_an_honest_device_streaming_after_a_gateway_restart_is_never_banned(tmp_path) -> None:
    """Data at an honest pace without a session (the gateway restarted) stay far below the allowance."""
    defence = DefenceSettings(preauth_rate=20.0, preauth_burst=30, preauth_ban=3.0)
    async with site(tmp_path, n_devices=1, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        topic = str(topics.data("gw-a", dev.hex, "telemetry"))
        for i in range(60):  # twice the burst, at no more than the rate (20/s): the allowance refills
            dev.replay(topic, b"sessionless %d" % i)
            await asyncio.sleep(0.05)
        assert await eventually(lambda: gw.metrics.get("data_dropped", "no_session") == 60, 5)
        assert gw.metrics.get("preauth_bans") == 0 and not dev.client.closed.done()
        await dev.close()


async def test_a_ban_holds_over_a_re_key_window_and_its_end_brings_the_window_account_back(tmp_path) -> None:
    """Issue 10: two devices are banned at the broker; during their bans each is transferred and its new
    owner names this gateway to carry its re-key (``startRekey``). No account reaches them during the
    ban; when it ends, the device whose window is still open on the chain gets its re-key account back
    (it logs in with P from S), and the one whose owner suspended it meanwhile gets nothing."""
    from firmware_sim.campaign_attacks import onboard_one
    from gateway.mqtt import MqttClient
    from ledger_bridge.enrollment import ProvisionedDevice
    from ledger_bridge.keystore import Signer
    from ledger_bridge.rekey import start_rekey, window_password

    defence = DefenceSettings(preauth_rate=10.0, preauth_burst=300, preauth_ban=8.0)
    async with site(tmp_path, n_devices=1, gateway_settings={"defence": defence}) as s:
        gw, enforcer = s.gateways["gw-a"], s.enforcer
        owner, ledger = s.actors["owner"], s.ledger
        pair = []
        for n in range(2):  # devices with a device key: a transfer leaves their re-key pending
            identity = ProvisionedDevice.generate(
                model="ban-rk", serial=f"BAN-RK-{n}", firmware_hash=s.devices[0].firmware_hash
            )
            await onboard_one(s.actors["manufacturer"], owner, identity, s.keys["gw-a"], s.policy_id,
                              X25519PrivateKey.generate().public_key().public_bytes_raw())
            s.devices.append(identity)
            pair.append((identity, s.sim(len(s.devices) - 1)))
        kept, suspended = (identity.device_id for identity, _ in pair)
        assert await eventually(lambda: {kept, suspended} <= gw.devices.entries.keys(), 10)
        for identity, dev in pair:
            await enrolled_at_broker(enforcer, dev.hex)
            await dev.connect()
            topic = str(topics.data("gw-a", dev.hex, "telemetry"))
            for i in range(1_000):  # no session: refused against its allowance, then banned
                dev.replay(topic, b"junk %d" % i)
        assert await eventually(lambda: gw.metrics.get("preauth_bans") == 2, 15), dict(gw.metrics.counters)

        signer = Signer.generate(label="new-owner")
        await ledger.fund(signer.address, 10**18)
        new_owner = ledger.actor(signer)
        for identity, _ in pair:
            did = identity.device_id
            await owner.transfer(did, signer.address)
            await new_owner.accept_transfer(did)
            await new_owner.activate(did)
            await start_rekey(ledger, new_owner, did, b"gw-a", secret=identity.secret)
        await new_owner.suspend(suspended)  # its window closes during its ban

        async def window_login(identity: ProvisionedDevice) -> MqttClient:
            _, epoch = await ledger.device_state(identity.device_id)
            hex_id = identity.device_id.hex()
            password = window_password(identity.secret, identity.device_id, epoch).hex()
            return await MqttClient.connect("127.0.0.1", s.broker.port, client_id=hex_id, username=hex_id,
                                            password=password, on_message=lambda t, p: None, timeout=3)

        # the index saw the window open for `kept`: during the ban, no account for it all the same
        assert await eventually(lambda: kept in gw.devices.rekeying, 10)
        for _ in range(3):
            await asyncio.sleep(0)  # the background enrolment, were there one, is staged by now
        assert gw.metrics.get("bans_lifted") == 0, "the test outlived the ban: make preauth_ban longer"
        assert enforcer.state_of(kept.hex()) == "absent"
        with pytest.raises(MqttConnectError):
            await window_login(pair[0][0])

        # the bans end: the window account comes back where the window is still open, nowhere else
        assert await eventually(lambda: gw.metrics.get("bans_lifted") == 2, 20)
        assert enforcer.state_of(kept.hex()) == "rekeying"
        assert enforcer.state_of(suspended.hex()) == "absent"
        await enforcer.flush()
        client = await window_login(pair[0][0])
        await client.close()
        with pytest.raises(MqttConnectError):
            await window_login(pair[1][0])
        for _, dev in pair:
            await dev.close()


async def test_a_ban_survives_a_gateway_restart_and_ends_when_it_was_due(tmp_path) -> None:
    """A flooder cannot get back in by waiting for (or provoking) a gateway restart: the ban is kept in
    the gateway's state (counters.sqlite, wall-clock end), so the restarted gateway enrols everyone but
    the banned device, and enrols it when the ban is due to end, as the ban's end does without a restart.
    The restarted gateway's wall clock is injected to stand a few seconds before that end."""
    from tests.gateway.stack import start_gateway, stop_gateway

    defence = DefenceSettings(preauth_rate=10.0, preauth_burst=300, preauth_ban=600.0)
    async with site(tmp_path, n_devices=2, gateway_settings={"defence": defence}) as s:
        gw, enforcer = s.gateways["gw-a"], s.enforcer
        flooder, victim = s.sim(0), s.sim(1)
        await flooder.connect()
        topic = str(topics.data("gw-a", flooder.hex, "telemetry"))
        for i in range(3_000):  # no session: each is dropped, and refused against its allowance
            flooder.replay(topic, b"junk %d" % i)
        assert await eventually(lambda: gw.metrics.get("preauth_bans") == 1, 15), dict(gw.metrics.counters)
        assert await eventually(lambda: flooder.client.closed.done(), 5), "the broker closed its connection"

        # a restart during the ban: everyone else is enrolled again, the flooder is not
        await stop_gateway(s, "gw-a")
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer, defence=defence)
        await enforcer.flush()
        assert enforcer.state_of(victim.hex) == "enrolled"
        assert enforcer.state_of(flooder.hex) == "absent"
        with pytest.raises(MqttConnectError):
            await flooder.connect(timeout=3)
        await victim.connect()
        assert isinstance(await victim.authenticate(), events.Authenticated)
        assert gw.metrics.get("bans_lifted") == 0

        # another restart, its wall clock 4 s before the recorded end: the ban ends then, by itself, and
        # the device gets the account it is entitled to then (``_lift_ban``, as without a restart)
        ((banned, until),) = gw.counters.bans(time.time()).items()
        assert banned == flooder.device_id and until > time.time() + 500
        await stop_gateway(s, "gw-a")
        shift = until - 4.0 - time.time()
        gw = await start_gateway(s, "gw-a", tmp_path, enforcer=enforcer, defence=defence,
                                 wall_clock=lambda: time.time() + shift)
        assert await eventually(lambda: gw.metrics.get("bans_lifted") == 1, 20)
        await enrolled_at_broker(enforcer, flooder.hex)
        await flooder.connect(timeout=3)
        assert isinstance(await flooder.authenticate(), events.Authenticated)
        assert gw.counters.bans(time.time() + shift) == {}, "an ended ban is no longer recorded"
        for d in (flooder, victim):
            await d.close()


async def test_a_ban_that_cannot_be_recorded_still_holds_and_the_gateway_goes_on(tmp_path, monkeypatch):
    """The state disk refuses the ban's record (full, failing): counted and logged, the device is cut off
    all the same, and the gateway keeps serving (the error does not end its task group)."""
    from gateway.counters import CounterStoreError

    defence = DefenceSettings(preauth_rate=10.0, preauth_burst=300, preauth_ban=600.0)
    async with site(tmp_path, n_devices=2, gateway_settings={"defence": defence}) as s:
        gw = s.gateways["gw-a"]

        def disk_full(*args: object, **kw: object) -> None:
            raise CounterStoreError("ban update failed: database or disk is full")

        monkeypatch.setattr(gw.counters, "set_ban", disk_full)
        flooder, victim = s.sim(0), s.sim(1)
        await flooder.connect()
        topic = str(topics.data("gw-a", flooder.hex, "telemetry"))
        for i in range(3_000):
            flooder.replay(topic, b"junk %d" % i)
        assert await eventually(
            lambda: gw.metrics.get("ban_store_errors") == 1, 15
        ), dict(gw.metrics.counters)
        assert await eventually(lambda: flooder.client.closed.done(), 5), "the broker closed its connection"
        with pytest.raises(MqttConnectError):
            await flooder.connect(timeout=3)
        await victim.connect()
        assert isinstance(await victim.authenticate(), events.Authenticated)
        await victim.close()
