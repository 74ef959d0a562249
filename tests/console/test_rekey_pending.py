"""A re-key due after a transfer is shown where the owner looks (issue 10): `diams-ledger show device`
(text and --json), the console's device page (in a real Chromium) and its API say "re-key pending, carried
by G" between ``startRekey`` naming gateway G and ``confirmRekey``; "no gateway named yet" between
``acceptTransfer`` and ``startRekey``; nothing before the transfer or after the confirmation. All of it
is read from the chain (``deviceKey``'s pending flag and the latest ``RekeyStarted`` at the current
epoch), on eth-tester."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ledger_bridge import Ledger, cli
from ledger_bridge.enrollment import ProvisionedDevice
from ledger_bridge.keystore import load_signer
from ledger_bridge.rekey import start_rekey
from tests.conftest import require
from tests.console.test_browser import ARGS, CHROMIUM, SHOTS
from tests.console.world import FIRMWARE, PASSPHRASES, POLICY, world

pytestmark = pytest.mark.asyncio


async def show_device(
    ledger: Ledger, device_hex: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    *extra: str,
) -> str:
    """`diams-ledger show device` over the test's chain (eth-tester lives in this process only)."""

    @contextlib.asynccontextmanager
    async def this_chain(**_: Any) -> AsyncIterator[Ledger]:
        yield ledger

    monkeypatch.setattr(cli, "Ledger", this_chain)
    monkeypatch.setattr(cli, "_backend", lambda args: None)
    monkeypatch.setattr(cli, "_channel", lambda args: ledger.channel)
    args = cli.build_parser().parse_args(["--eth-tester", "show", "device", device_hex, *extra])
    capsys.readouterr()
    assert await cli.cmd_show_device(args) == 0
    return capsys.readouterr().out


def rekey_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("re-key")]


async def test_show_device_and_the_console_say_re_key_pending_carried_by_the_named_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require(shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM), "chromium (apt chromium)")
    from playwright.async_api import async_playwright

    async with world(tmp_path, n_devices=2) as w:
        ledger = w.ledger
        manufacturer, owner, new_owner = (
            ledger.actor(load_signer(w.keystores[n], PASSPHRASES[n]))
            for n in ("manufacturer", "owner", "operator")
        )
        device = ProvisionedDevice.generate(model="sensor", serial="RK-1", firmware_hash=FIRMWARE)
        did, hex_id = device.device_id, device.device_id.hex()
        await manufacturer.register_many([device.registration()])
        device_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
        await manufacturer.register_device_key(did, device_key)
        await owner.onboard_many([did], [device.claim_code], POLICY)
        owner_api = {"Authorization": f"Bearer {(await w.login('owner'))['token']}"}

        async def api_rekey() -> object:
            resp = await w.client.get(f"/api/devices/{hex_id}/history", headers=owner_api)
            assert resp.status == 200, await resp.text()
            return (await resp.json())["rekey"]

        # before a transfer: no re-key is due, nothing is said
        out = await show_device(ledger, hex_id, capsys, monkeypatch)
        assert "state         Active" in out and rekey_lines(out) == []
        assert await api_rekey() is None

        # accepted: a re-key is due, and no gateway carries it yet
        await owner.transfer(did, w.addresses["operator"])
        await new_owner.accept_transfer(did)
        out = await show_device(ledger, hex_id, capsys, monkeypatch)
        assert rekey_lines(out) == [
            "re-key        pending, no gateway named to carry it yet (`diams-ledger rekey --gateway G`)"
        ]
        assert await api_rekey() == {"carried_by": None}

        # startRekey names gw-1: "carried by gw-1", in text, JSON, the API and the page
        await start_rekey(ledger, new_owner, did, b"gw-1", secret=device.secret)
        out = await show_device(ledger, hex_id, capsys, monkeypatch)
        assert rekey_lines(out) == ["re-key        pending, carried by gw-1"]
        shown = json.loads(await show_device(ledger, hex_id, capsys, monkeypatch, "--json"))
        assert shown["rekey"] == {"pending": True, "carried_by": "gw-1"}
        assert await api_rekey() == {"carried_by": "gw-1"}

        base = str(w.client.make_url("")).rstrip("/")
        SHOTS.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            # a device page reads the chain a dozen times (eth-tester, one worker thread): on a machine
            # shared by four test runs that can pass Playwright's 30 s default
            page.set_default_timeout(120_000)
            await page.goto(base + "/login")
            await page.set_input_files("#keystore", str(w.keystores["operator"]))
            await page.fill("#passphrase", PASSPHRASES["operator"])
            await page.click("button[type=submit]")
            await page.wait_for_url(base + "/")
            await page.goto(f"{base}/devices/{hex_id}")
            assert (await page.inner_text("#rekey")).strip() == "pending, carried by gw-1"
            # the chain refuses a gateway authorization until the re-key is confirmed: no button for it
            assert await page.query_selector("a.button:text-is('authorize gateway')") is None
            assert "once the re-key is confirmed" in await page.inner_text("#rekey-first")
            await page.screenshot(path=str(SHOTS / "12-device-rekey-pending.png"), full_page=True)

            # confirmRekey: the re-key is done, and no longer shown anywhere
            await new_owner.confirm_rekey(did, os.urandom(32))
            await page.goto(f"{base}/devices/{hex_id}")
            assert await page.query_selector("#rekey") is None
            assert await page.query_selector("a.button:text-is('authorize gateway')") is not None
            assert "(you)" in await page.inner_text("dl.kv")
            await browser.close()
        assert rekey_lines(await show_device(ledger, hex_id, capsys, monkeypatch)) == []
        assert await api_rekey() is None
