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

from pathlib import Path

import pytest

from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.rekey import RekeyResponder
from device_agent.core import rekey
from firmware_sim.agents import running
from tests.waiting import eventually

from .rekey_site import ledger_cli, served_after_authorization, transferred

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]
GW = "gw-a"


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
    async with transferred(tmp_path, capsys, monkeypatch, GW) as t:
        agent = t.agent()
        crash = Crashing(agent.driver._rekey, agent, point)  # type: ignore[arg-type]
        agent.driver._rekey = crash  # type: ignore[assignment]
        with running(agent):
            code, out, err = await ledger_cli(capsys, *t.rekey_argv())
        assert crash.dead, "CONFIRM never reached the device"
        assert code == 1 and "no DONE" in err, (out, err)
        assert await t.pending(), "confirmRekey recorded without the device's proof of commit"
        kept = t.bundle_secret()  # S', stored before CONFIRM left
        assert t.held() == (kept if point == "after_commit" else t.old_secret)
        _, epoch_before = await t.ledger.device_state(t.did)

        agent = t.agent()  # the device restarts, holding S, or S' (after_commit)
        with running(agent):
            code, out, err = await ledger_cli(capsys, *t.rekey_argv())  # the owner's retry
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
    async with transferred(tmp_path, capsys, monkeypatch, GW) as t:
        agent = t.agent()
        forging = Forging(agent.driver._rekey, t.did, t.public)  # type: ignore[arg-type]
        agent.driver._rekey = forging  # type: ignore[assignment]
        with running(agent):
            for mode in ("from_s", "replay"):
                forging.mode = mode
                code, out, err = await ledger_cli(capsys, *t.rekey_argv())
                assert code == 1 and "bad_done" in err, (mode, out, err)
                assert await t.pending(), f"confirmRekey recorded on a {mode} DONE"
                assert t.held() == t.bundle_secret()  # the device did commit; only DONE was forged
            assert len(forging.genuine) == 2 and forging.forged[1] == forging.genuine[0] != forging.genuine[1]
            assert forging.forged[0] not in forging.genuine
            forging.mode = "honest"
            code, out, err = await ledger_cli(capsys, *t.rekey_argv())
            assert code == 0, err
            assert not await t.pending()
            assert t.held() == t.bundle_secret() != t.old_secret
            await served_after_authorization(t, capsys, agent)
