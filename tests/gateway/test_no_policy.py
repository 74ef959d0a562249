"""A device served without an access policy: its data would be dropped as not_in_policy, so the gateway
says so when it loads the device (a warning in its log and a gauge in /metrics), once per device."""

from __future__ import annotations

import logging

import pytest

from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio


async def test_gateway_warns_when_a_served_device_has_no_policy(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="diams.gateway")
    async with site(tmp_path, n_devices=2, policy_streams=()) as s:
        gw = s.gateways["gw-a"]
        ids = {d.device_id for d in s.devices}
        assert set(gw.devices.entries) == ids
        assert gw.devices.without_policy == ids
        assert "diams_devices_without_policy 2.0" in gw.metrics.render()
        warned = [r.getMessage() for r in caplog.records if "has no access policy" in r.getMessage()]
        assert sorted(w.split()[1] for w in warned) == sorted(d.hex() for d in ids)


async def test_no_warning_when_the_policy_allows_streams(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="diams.gateway")
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        assert gw.devices.without_policy == set()
        assert "diams_devices_without_policy 0.0" in gw.metrics.render()
        assert not [r for r in caplog.records if "has no access policy" in r.getMessage()]
