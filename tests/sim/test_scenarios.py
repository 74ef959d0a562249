"""Every simulator scenario against a whole in-process site (real Mosquitto, EVM, gateway daemon)."""

from __future__ import annotations

import asyncio
import json
import random
import xml.etree.ElementTree as ET

import pytest

from firmware_sim.fleet import Backoff, Observer, Pacer, SiteAccess, ledger_firmware_update
from firmware_sim.report import FleetReport
from firmware_sim.scenarios import SCENARIOS, ScenarioParams, identities_needed, run_scenario
from ledger_bridge import Role, Signer
from ledger_bridge.index import onchain_gateway_id
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio

PARAMS = ScenarioParams(devices=4, attackers=2, seconds=2.0, data_interval=0.5, settle=5.0)


async def test_every_scenario_ends_as_the_protocol_requires(tmp_path):
    n = sum(identities_needed(name, PARAMS) for name in SCENARIOS)
    async with site(tmp_path, n_devices=n) as s:
        gw = s.gateways["gw-a"]
        observer = await Observer().start(
            "127.0.0.1", s.broker.port, username="gateway-gw-a.1", password=s.actors["broker-gw-a"]
        )

        async def metric(name: str, label: str) -> int:
            return gw.metrics.get(name, label)

        async def restart() -> None:
            await asyncio.to_thread(s.broker.restart)
            await observer.reconnect()  # a client like any other: it comes back too

        maintainer = Signer.generate(label="maintainer")
        await s.ledger.fund(maintainer.address, 10**19)
        await s.actors["admin"].grant_role(Role.MAINTAINER, maintainer.address)
        update = ledger_firmware_update(
            s.ledger,
            maintainer=s.ledger.actor(maintainer),
            owner=s.actors["owner"],
            gateways=[onchain_gateway_id(b"gw-a")],
        )

        access = SiteAccess(
            host="127.0.0.1",
            port=s.broker.port,
            gateway_id="gw-a",
            identities=iter(s.devices),
            owner=s.actors["owner"],
            restart_broker=restart,
            observer=observer,
            gateway_metric=metric,
            update_firmware=update,
            pacer=Pacer(200.0),
            backoff=Backoff(base=0.5, cap=4.0),
            rng=random.Random(5),
        )
        report = FleetReport()
        for name in SCENARIOS:
            result = await run_scenario(access, name, PARAMS)
            report.scenarios.append(result)
        await observer.close()
    by_name = {r.name: r for r in report.scenarios}
    text = report.render()
    for name, r in by_name.items():
        assert r.ok, (name, r.checks, dict(r.outcomes), text)
    assert by_name["firmware_mismatch"].outcomes["bad_otp"] == 2
    assert by_name["counter_window"].outcomes["authenticated"] == 2  # no lockout after a jump
    assert by_name["clone"].outcomes["clone:clone"] == 2
    assert by_name["revoked"].outcomes["cut_off"] == 2
    assert by_name["firmware_update"].outcomes["old_image_bad_otp"] == 1
    assert by_name["firmware_update"].messages_verified == by_name["firmware_update"].messages_sent == 2
    assert by_name["steady"].messages_verified == by_name["steady"].messages_sent > 0
    json_path, svg_path = report.write(tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["ok"] is True and {s["name"] for s in data["scenarios"]} == set(SCENARIOS)
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "max"}
    root = ET.fromstring(svg_path.read_text())
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("rect")]) > 2
