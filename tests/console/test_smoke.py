from __future__ import annotations

import pytest

from tests.console.world import world

pytestmark = pytest.mark.asyncio


async def test_smoke(tmp_path):
    async with world(tmp_path) as w:
        s = await w.login("owner")
        h = {"Authorization": f"Bearer {s['token']}"}
        r = await w.client.get("/api/devices", headers=h)
        print(await r.json())
        await w.browser_login("owner")
        for path in [
            "/",
            "/devices",
            f"/devices/{w.devices[0].device_id.hex()}",
            "/enroll",
            "/gateways",
            "/audit",
            "/channel",
            "/docs/api",
        ]:
            r = await w.client.get(path)
            assert r.status == 200, (path, await r.text())
