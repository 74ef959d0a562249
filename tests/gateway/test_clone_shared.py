"""Clone quarantine shared through the ledger: the gateway that detects a clone reports it on chain, and
every other gateway's index then refuses the device too, until the owner acts on the ledger."""

from __future__ import annotations

import pytest

from device_agent.core import events
from gateway.settings import ProtocolSettings
from tests.gateway.helpers import eventually
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio

FAST_PROBES = {"protocol": ProtocolSettings(proof_timeout=0.3, session_lifetime=600)}


async def test_a_clone_alert_on_chain_quarantines_the_device_at_every_gateway(tmp_path):
    async with site(tmp_path, n_devices=2, gateway_ids=("gw-a", "gw-b"), gateway_settings=FAST_PROBES) as s:
        gw_a, gw_b = s.gateways["gw-a"], s.gateways["gw-b"]
        original, clone = s.sim(0), s.sim(0)
        did = original.device_id
        # the device also holds a session with gw-b, which never sees the clone itself
        at_b = s.sim(0, gateway_id="gw-b")
        await at_b.connect()
        assert isinstance(await at_b.authenticate(), events.Authenticated)
        await at_b.close()
        assert did in gw_b.traffic.sessions
        await original.connect()
        for _ in range(2):
            assert isinstance(await original.authenticate(), events.Authenticated)
        await original.close()
        await clone.connect()
        result = await clone.authenticate()
        assert isinstance(result, events.Rejected) and result.reason == "clone", result
        await clone.close()
        # gw-b learns it from the chain: its session ends and the device is no longer active there
        assert await eventually(lambda: not gw_b.devices.entries[did].active, 10), "gw-b never quarantined"
        assert did not in gw_b.traffic.sessions
        assert gw_b.metrics.get("clone_detected") == 0  # gw-b never saw the clone itself
        refused = gw_b.devices.role.receive(did, at_b.sent_messages[0], 0.0)[1][0]
        assert refused.reason == "not_active", refused
        # the other device is untouched at both gateways
        other = s.devices[1].device_id
        assert gw_a.devices.entries[other].active and gw_b.devices.entries[other].active
        # the owner acts (suspends, then reactivates): both gateways serve the device again
        await s.actors["owner"].suspend(did)
        assert await eventually(lambda: did not in gw_a.devices.entries and did not in gw_b.devices.entries)
        await s.actors["owner"].activate(did)
        assert await eventually(
            lambda: did in gw_b.devices.entries and gw_b.devices.entries[did].active, 10
        ), "gw-b kept the quarantine after the owner acted"
        assert await eventually(lambda: did in gw_a.devices.entries and gw_a.devices.entries[did].active, 10)
