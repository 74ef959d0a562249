"""``enforcement.rights = "per_device"`` end to end: the broker itself lets a device publish data only
while it holds a session (Grant at authentication, before the RESULT leaves; Demote when it ends)."""

from __future__ import annotations

import pytest

from device_agent.core import events, topics
from tests.broker.clients import Probe
from tests.gateway.helpers import eventually, verified_listener
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio
NOT_AUTHORIZED = 135


async def test_per_device_rights_follow_the_session(tmp_path) -> None:
    async with site(tmp_path, n_devices=1, rights="per_device") as s:
        gw = s.gateways["gw-a"]
        assert gw.per_device_rights
        ident = s.devices[0]
        hex_id = ident.device_id.hex()
        data_topic = str(topics.data("gw-a", hex_id, "telemetry"))
        # before authenticating: the broker refuses the device's data (an attacker holding only P)
        raw = Probe(s.broker, hex_id, ident.broker_password(0))
        assert raw.connect() == 0
        assert raw.publish(data_topic, b"early").value == NOT_AUTHORIZED
        raw.close()

        dev = s.sim(0)
        await dev.connect()
        listener, got = await verified_listener(s.broker.port, gw)
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert gw._enforcer.state_of(hex_id) == "granted" and gw.metrics.get("grants") == 1
        dev.send_data("telemetry", b"right after the RESULT")
        assert await eventually(lambda: [p for _, p in got] == [b"right after the RESULT"], 5), (
            dict(gw.metrics.counters)
        )
        # the session ends (here: the gateway drops it): Demote, and the broker refuses data again
        gw.traffic.drop_session(ident.device_id, "expired")
        assert await eventually(lambda: gw.metrics.get("demotes") == 1, 5)
        assert gw._enforcer.state_of(hex_id) == "enrolled"
        await dev.close()
        raw = Probe(s.broker, hex_id, ident.broker_password(0))
        assert raw.connect() == 0
        assert raw.publish(data_topic, b"late").value == NOT_AUTHORIZED
        raw.close()
        await listener.close()
