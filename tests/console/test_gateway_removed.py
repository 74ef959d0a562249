"""A removed gateway is shown as removed, never as unknown: the console's gateways page (in a real
Chromium) and `GET /api/gateways/{name}` say when (block and time), by whom and in which transaction
``removeGateway`` ran, and what that means; a name never registered still gets "never registered". What
names the removed gateway (authorize from a bundle, register its name again) is refused in words, not with
the chain's UnknownGateway or GatewayExists. On eth-tester, with the console's own identity index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ledger_bridge.keystore import load_signer
from tests.conftest import require
from tests.console.test_browser import ARGS, CHROMIUM, SHOTS
from tests.console.test_rekey_pending import show_device
from tests.console.world import PASSPHRASES, world

pytestmark = pytest.mark.asyncio


async def test_a_removed_gateway_is_shown_as_removed_with_when_and_by_whom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require(shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM), "chromium (apt chromium)")
    from playwright.async_api import async_playwright

    async with world(tmp_path, n_devices=2) as w:
        operator = w.ledger.actor(load_signer(w.keystores["operator"], PASSPHRASES["operator"]))
        owner_api = {"Authorization": f"Bearer {(await w.login('owner'))['token']}"}
        live = await (await w.client.get("/api/gateways/gw-1", headers=owner_api)).json()
        assert (live["removed"], live["removal"], live["consequences"]) == (False, None, [])

        removal = await operator.remove_gateway(b"gw-1".ljust(32, b"\0"))
        await w.service.sync()
        by = w.addresses["operator"]

        # the API: 200 with the removal, where it said 409 "not registered"; 409 "never" for an unknown name
        resp = await w.client.get("/api/gateways/gw-1", headers=owner_api)
        assert resp.status == 200, await resp.text()
        shown = await resp.json()
        assert shown["removed"] is True and shown["account"] == "0x" + "0" * 40
        assert (shown["removal"]["block"], shown["removal"]["tx"]) == (
            removal.block_number, removal.transaction_hash
        )
        assert shown["removal"]["by"].lower() == by.lower()
        assert any("can never be registered again" in c for c in shown["consequences"])
        listed = await (await w.client.get("/api/gateways", headers=owner_api)).json()
        assert listed["gateways"] == [] and [g["gateway"] for g in listed["removed"]] == ["gw-1"]
        assert (listed["removed"][0]["block"], listed["removed"][0]["tx"]) == (
            removal.block_number, removal.transaction_hash
        )
        never = await w.client.get("/api/gateways/gw-never", headers=owner_api)
        assert never.status == 409
        assert (await never.json())["error"] == "gateway gw-never was never registered on this channel"

        # the device it served: its grant is shown as the removed gateway's, in the API and `show device`
        device = w.devices[0]
        history = await w.client.get(f"/api/devices/{device.device_id.hex()}/history", headers=owner_api)
        assert [(g["gateway"], g["current"], g["removed"]) for g in (await history.json())["gateways"]] == [
            ("gw-1", False, True)
        ]
        out = await show_device(w.ledger, device.device_id.hex(), capsys, monkeypatch)
        assert [line for line in out.splitlines() if line.startswith("gateway")] == [
            "gateway       gw-1: sealed key for epoch 0, gateway removed, it no longer counts "
            "(`diams-ledger show gateway gw-1`)"
        ]
        out = await show_device(w.ledger, device.device_id.hex(), capsys, monkeypatch, "--json")
        assert json.loads(out)["removed_gateways"] == ["gw-1"]

        # authorizing a device for it, or registering its name again, is refused in words
        bundle = {
            "device_id": device.device_id.hex(), "model": device.model, "serial": device.serial,
            "mac": device.mac.hex(), "firmware_hash": device.firmware_hash.hex(),
            "secret": device.secret.hex(), "salt": device.salt.hex(), "claim_code": "claimed already",
        }
        refused = await w.client.post(
            f"/api/devices/{device.device_id.hex()}/gateways",
            headers=owner_api,
            json={"gateway": "gw-1", "bundle": bundle},
        )
        error = (await refused.json())["error"]
        assert refused.status == 409 and error.startswith(
            f"gateway gw-1 was removed in block {removal.block_number} ("
        ), error
        assert "no device can be authorized for it" in error and "Unknown" not in error
        operator_api = {"Authorization": f"Bearer {(await w.login('operator'))['token']}"}
        again = await w.client.post(
            "/api/gateways",
            headers=operator_api,
            json={"gateway": "gw-1", "x25519": os.urandom(32).hex(), "account": w.addresses["gateway"]},
        )
        error = (await again.json())["error"]
        assert again.status == 409 and "can never be registered again" in error and "Exists" not in error

        base = str(w.client.make_url("")).rstrip("/")
        SHOTS.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)  # chain reads on a shared machine
            await page.goto(base + "/login")
            await page.set_input_files("#keystore", str(w.keystores["operator"]))
            await page.fill("#passphrase", PASSPHRASES["operator"])
            await page.click("button[type=submit]")
            await page.wait_for_url(base + "/")
            await page.goto(base + "/gateways")
            assert "No gateway registered." in await page.inner_text("table")
            card = await page.inner_text("#removed-gw-1")
            assert "gw-1: removed" in card
            assert f"removed in block\n{removal.block_number} (20" in card and " UTC)" in card
            assert f"{by} (its operator)".lower() in card.lower() and removal.transaction_hash in card
            consequences = await page.locator("#removed-gw-1 ul.consequences li").all_inner_texts()
            assert len(consequences) == len(shown["consequences"])
            assert any("diams-ledger deauthorize-gateway <device> gw-1" in c for c in consequences)
            await page.screenshot(path=str(SHOTS / "13-gateway-removed.png"), full_page=True)

            # the device page says its grant is the removed gateway's, and links to the removal
            await page.goto(f"{base}/devices/{device.device_id.hex()}")
            status = page.locator("table td a[href='/gateways#removed-gw-1']")
            assert (await status.inner_text()).strip() == "gateway removed"
            await page.screenshot(path=str(SHOTS / "14-device-gateway-removed.png"), full_page=True)

            # the devices it served: none now, and the page says why
            await page.goto(f"{base}/devices?gateway=gw-1")
            assert (await page.inner_text("#gateway-removed")).strip() == (
                f"Gateway gw-1 was removed in block {removal.block_number}: it may authenticate no device."
            )
            assert "No device matches." in await page.inner_text("table")

            # the page's own register form says the same for the removed name
            await page.goto(base + "/gateways")
            await page.fill("#gname", "gw-1")
            await page.fill("#x25519", os.urandom(32).hex())
            await page.fill("#account", w.addresses["gateway"])
            await page.click("form[action='/gateways'] button[type=submit]")
            assert "can never be registered again" in await page.inner_text("body")
            await browser.close()
