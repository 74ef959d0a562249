"""The whole story in a real Chromium (Debian's, driven by Playwright): the manufacturer enrolls a device
from the CSV that provisioning wrote, the owner defines a policy, claims, sets the policy, activates and
authorizes the gateway with the device's bundle; the device authenticates through the real gateway and
Mosquitto; the owner revokes it from the page and the gateway cuts it off.

Screenshots of the main pages go to run/screenshots/ (printed at the end)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from device_agent.agent.provision import provision
from device_agent.core import events
from firmware_sim.device import SimDevice
from gateway.mqtt import MqttConnectError
from ledger_bridge import Role
from ledger_bridge.console import ConsoleService, create_app
from ledger_bridge.index import IdentityIndex
from ledger_bridge.keystore import create_keystore
from ledger_bridge.operations import OwnerBundle
from tests.conftest import require
from tests.gateway.helpers import eventually
from tests.gateway.stack import site
from tests.waiting import enrolled_at_broker

ETH = 10**18

pytestmark = pytest.mark.asyncio

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "run" / "screenshots"
PASS = "browser story passphrase"


async def test_enroll_watch_and_revoke_in_a_browser(tmp_path: Path) -> None:
    require(shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM), "chromium (apt chromium)")
    from playwright.async_api import async_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with site(tmp_path, n_devices=0, gateway_ids=("gw-1",)) as s:
        ledger, gw = s.ledger, s.gateways["gw-1"]
        keystores = {}
        for name, role in (("manufacturer", Role.MANUFACTURER), ("owner", None)):
            keystores[name] = tmp_path / f"{name}.json"
            signer = create_keystore(keystores[name], PASS, label=name)
            await ledger.fund(signer.address, 10 * ETH)
            if role:
                await s.actors["admin"].grant_role(role, signer.address)
        fw = tmp_path / "fw.bin"
        fw.write_bytes(b"story firmware")
        prov = provision(
            model="pi-sensor",
            serial="STORY-1",
            mac="02:00:00:00:00:42",
            firmware=fw,
            out=tmp_path / "factory",
            gateways=("gw-1",),
        )
        did_hex = prov.record.device_id
        bundle = json.loads(prov.owner_file.read_text())

        index = IdentityIndex(tmp_path / "console.sqlite", start_block=ledger.channel.deployed_block)
        service = ConsoleService(
            ledger=ledger, index=index, audit_logs=[gw.settings.state_dir / "audit.log"], sync_interval_s=0.2
        )
        runner = web.AppRunner(create_app(service), access_log=None)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        base = f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 900})

                async def shot(name: str) -> None:
                    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

                async def sign_in(who: str) -> None:
                    await page.goto(base + "/login")
                    await page.set_input_files("#keystore", str(keystores[who]))
                    await page.fill("#passphrase", PASS)
                    await page.click("button[type=submit]")
                    await page.wait_for_url(base + "/")

                async def act(label: str, **fields: str) -> None:
                    await page.goto(f"{base}/devices/{did_hex}")
                    await page.click(f"a.button:text-is('{label}')")
                    for name, value in fields.items():
                        await page.fill(f"#{name}", value)
                    await page.click("button[type=submit]:has-text('Yes')")
                    await page.wait_for_selector(".flash")

                # the manufacturer registers the device from provisioning's CSV
                await shot("00-login") if await page.goto(base + "/login") else None
                await sign_in("manufacturer")
                await page.goto(base + "/enroll")
                await shot("03-enroll")
                await page.set_input_files(
                    "form[action='/enroll/csv/register'] input[type=file]", str(prov.csv_file)
                )
                await page.click("form[action='/enroll/csv/register'] button")
                await page.wait_for_selector("#summary", timeout=30_000)
                assert "registered 1 devices" in await page.inner_text("#summary")
                await shot("04-job")
                await page.click("button:has-text('Sign out')")

                # the owner: a policy, then claim, policy, activate, authorize gw-1 with the bundle
                await sign_in("owner")
                await page.goto(base + "/enroll")
                await page.fill("#pname", "sensors")
                await page.fill("#publish", "telemetry,status")
                await page.fill("#subscribe", "config")
                await page.click("form[action='/enroll/policy'] button")
                await page.wait_for_selector(".flash")
                await act("claim", claim_code=bundle["claim_code"])
                await act("set policy", policy="sensors")
                await act("activate")
                await page.goto(f"{base}/devices/{did_hex}/authorize")
                await page.select_option("#gateway", "gw-1")
                await page.set_input_files("#bundle", str(prov.owner_file))
                await page.click("button:has-text('Authorize')")
                await page.wait_for_selector(".flash")
                assert "authorized gw-1" in await page.inner_text(".flash")

                # the device authenticates through the gateway and Mosquitto
                did = bytes.fromhex(did_hex)
                assert await eventually(lambda: did in gw.devices.entries, 15)
                await enrolled_at_broker(s.enforcer, did_hex)  # the broker has its password (a reload)
                device = SimDevice(
                    OwnerBundle.load(prov.owner_file).device(),
                    gateway_id="gw-1",
                    host="127.0.0.1",
                    port=s.broker.port,
                )
                await device.connect()
                assert isinstance(await device.authenticate(), events.Authenticated)
                assert await eventually(lambda: did in gw.traffic.sessions)
                gw.audit.sync()
                await page.goto(f"{base}/devices/{did_hex}")
                auth_table = await page.inner_text("table:last-of-type")
                assert "authenticated" in auth_table, auth_table
                await shot("02-device-active")
                await page.goto(base + "/")
                await shot("01-dashboard")
                await page.goto(base + f"/devices?prefix={did_hex[:4]}")
                assert did_hex in await page.inner_text("table")
                await shot("05-devices")
                await page.goto(base + "/gateways")
                await shot("06-gateways")
                await page.goto(base + "/channel")
                await shot("08-channel")
                await page.goto(base + "/docs/api")
                await shot("09-api")

                # revoke from the page: confirmation, then the gateway cuts the device off
                await page.goto(f"{base}/devices/{did_hex}")
                await page.click("a.button:text-is('revoke')")
                await shot("10-confirm-revoke")
                await page.click("button:has-text('Yes, revoke')")
                await page.wait_for_selector(".flash")
                assert "Revoked" in await page.inner_text("h1")
                assert await eventually(lambda: did not in gw.traffic.sessions, 15)
                assert await eventually(lambda: did not in gw.devices.entries, 15)
                with pytest.raises(MqttConnectError):  # its broker account is gone
                    await SimDevice(
                        OwnerBundle.load(prov.owner_file).device(),
                        gateway_id="gw-1",
                        host="127.0.0.1",
                        port=s.broker.port,
                    ).connect(timeout=5)
                gw.audit.sync()
                await page.goto(f"{base}/devices/{did_hex}")
                await shot("11-device-revoked")
                await page.goto(base + "/")
                assert "cut_off" in await page.inner_text("body")
                # the gateway anchors its audit batch; the auditor checks a record's inclusion
                assert await gw.anchor_now()
                await page.goto(base + "/audit")
                await page.fill("#seq", "1")
                await page.click("button:has-text('Check')")
                verdict = await page.inner_text("#verdict")
                assert verdict.startswith("Included: record 1") and "anchored by gw-1" in verdict, verdict
                await shot("07-audit")
                await browser.close()
            with contextlib_suppress():
                await device.close()
        finally:
            await runner.cleanup()
            index.close()
    print(f"\nscreenshots: {SHOTS}")


def contextlib_suppress() -> object:
    import contextlib

    return contextlib.suppress(Exception)
