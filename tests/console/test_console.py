"""diams-console through aiohttp's test client: every route (pages and API), signing in with a keystore,
roles, CSRF, cookies, expiring sessions, batch jobs with per-row errors, the audit inclusion check, and no
secret in any response or log."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
from aiohttp import FormData
from eth_account import Account
from web3 import Web3

from device_agent.core import identity
from ledger_bridge import Role, Signer, load_signer
from ledger_bridge.console import ConsoleSettings
from ledger_bridge.model import policy_key
from ledger_bridge.operations import name_id
from ledger_bridge.sealing import load_gateway_key, unseal
from tests.console.world import PASSPHRASES, World, world

pytestmark = pytest.mark.asyncio


def bearer(session: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['token']}"}


async def wait_job(w: World, job_id: str, headers: dict[str, str]) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + 240
    while asyncio.get_running_loop().time() < deadline:
        job = await (await w.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if job["finished"]:
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {job}")


@pytest.mark.timeout(900)  # some 40 transactions on py-evm: minutes on a machine shared by many
async def test_every_route_and_the_whole_workflow(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with world(tmp_path) as w:
        c = w.client
        dev0 = w.devices[0].device_id.hex()

        # ---- signed out: pages send to the sign-in page, the API says 401; the API's description is public
        r = await c.get("/devices", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login?next=/devices"
        assert (await c.get("/api/devices")).status == 401
        spec = await (await c.get("/openapi.json")).json()
        assert spec["openapi"] == "3.1.0" and "/api/devices/{device_id}/actions/{action}" in spec["paths"]
        docs = await (await c.get("/docs/api")).text()
        assert "/api/audit/inclusion" in docs
        page = await (await c.get("/login")).text()
        assert 'type="password"' in page

        # ---- wrong passphrase: refused, the passphrase is not echoed
        form = FormData()
        form.add_field("keystore", w.keystores["owner"].read_bytes(), filename="owner.json")
        form.add_field("passphrase", "not the passphrase 991")
        r = await c.post("/login", data=form)
        assert r.status == 401 and "wrong passphrase" in await r.text()
        r = await c.post(
            "/api/session",
            json={"keystore": json.loads(w.keystores["owner"].read_text()), "passphrase": "nope nope"},
        )
        assert r.status == 401
        assert (await c.post("/api/session", json={"keystore": "x", "passphrase": "y"})).status == 400
        assert (await c.post("/api/session", data=b"not json")).status == 400

        # ---- the owner signs in through the page: the cookie is HttpOnly and SameSite=Strict
        form = FormData()
        form.add_field("keystore", w.keystores["owner"].read_bytes(), filename="owner.json")
        form.add_field("passphrase", PASSPHRASES["owner"])
        form.add_field("next", "/devices")
        r = await c.post("/login", data=form, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/devices"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        page = await (await c.get("/enroll")).text()
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        assert "Register one device (manufacturer)" not in page  # the owner has no manufacturer role

        # ---- dashboard, lists, details
        page = await (await c.get("/")).text()
        assert "<svg" in page and "clone_detected" in page and '>4</div><div class="l">Active' in page
        dash = await (await c.get("/api/dashboard", headers={"X-CSRF-Token": csrf})).json()
        assert dash["states"]["Active"] == 4 and sum(dash["authentications"]["ok"]) == 4
        assert sum(dash["authentications"]["failed"]) == 1
        page = await (await c.get("/devices?state=Active&limit=2")).text()
        assert "4 matching" in page and "Next →" in page
        page = await (await c.get(f"/devices?prefix={dev0[:5]}&gateway=gw-1")).text()
        assert dev0 in page
        page = await (await c.get(f"/devices/{dev0}")).text()
        # policies live in their author's namespace (ids are policy_key(author, name)); PolicyDefined
        # carries the name, and the page shows it rather than the id
        owner_keystore = json.loads(w.keystores["owner"].read_text())
        owner_address = Web3.to_checksum_address("0x" + owner_keystore["address"])
        sensors = "0x" + policy_key(owner_address, name_id("sensors", what="policy")).hex()
        for text in (
            "DeviceRegistered",
            "GatewayAuthorized",
            "gw-1",
            "<dd>sensors</dd>",
            "characteristics commitment",
            "authenticated",
            "bad_proof",
            "suspend",
            "revoke",
        ):
            assert text in page, text
        assert "(you)" in page and sensors not in page
        assert (await c.get("/devices/zz")).status == 400
        assert (await c.get("/devices/" + "ab" * 8)).status == 409  # not registered: the ledger says so
        page = await (await c.get(f"/devices/{dev0}/actions/suspend")).text()
        assert "Yes, suspend" in page and "every gateway cuts it off" in page
        assert (await c.get(f"/devices/{dev0}/actions/explode")).status == 404
        for path in (
            "/gateways",
            "/audit",
            "/channel",
            f"/devices/{dev0}/recover",
            f"/devices/{dev0}/authorize",
        ):
            assert (await c.get(path)).status == 200, path

        # ---- CSRF: a form post without the token is refused, with it the action runs after confirmation
        r = await c.post(f"/devices/{dev0}/actions/suspend", data={"confirm": "yes"}, allow_redirects=False)
        assert r.status == 403
        r = await c.post(f"/devices/{dev0}/actions/suspend", data={"csrf": csrf}, allow_redirects=False)
        assert r.status == 400 and "not confirmed" in await r.text()
        r = await c.post(
            f"/devices/{dev0}/actions/suspend", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False
        )
        assert r.status == 303, await r.text()
        page = await (await c.get(r.headers["Location"])).text()
        assert "Done: suspend: tx 0x" in page and "Suspended" in page
        r = await c.post(
            f"/devices/{dev0}/recover", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False
        )
        assert r.status == 303
        assert await c.get("/api/devices/" + dev0)  # cookie session reads the API too
        # cookie-authenticated API writes need the header
        assert (await c.post(f"/api/devices/{dev0}/actions/suspend", json={})).status == 403
        r = await c.post(f"/api/devices/{dev0}/actions/suspend", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status == 200 and (await r.json())["transaction_hash"].startswith("0x")
        r = await c.post(f"/api/devices/{dev0}/recover", headers={"X-CSRF-Token": csrf})
        assert r.status == 200 and len((await r.json())["transactions"]) == 1  # from Suspended: activate

        # ---- the API with a bearer token (no CSRF needed: a browser never sends it by itself)
        owner = bearer(await w.login("owner"))
        row = await (await c.get(f"/api/devices/{dev0}", headers=owner)).json()
        assert (
            row["state"] == "Active"
            and row["policy"] == "sensors"
            and row["gateways"][0]["gateway"] == "gw-1"
        )
        assert (await c.get("/api/devices/" + "cd" * 8, headers=owner)).status == 404
        assert (await c.get("/api/devices/nothex", headers=owner)).status == 400
        hist = await (await c.get(f"/api/devices/{dev0}/history", headers=owner)).json()
        assert [t["event"] for t in hist["timeline"]][-4:] == [
            "DeviceSuspended",
            "DeviceActivated",
            "DeviceSuspended",
            "DeviceActivated",
        ]
        assert all(t["tx"].startswith("0x") and t["time"] > 0 for t in hist["timeline"])
        lst = await (await c.get("/api/devices?state=Active&limit=1&offset=1", headers=owner)).json()
        assert lst["total"] == 4 and len(lst["devices"]) == 1
        assert (await c.get("/api/devices?state=Sleepy", headers=owner)).status == 400
        assert (await c.get("/api/devices?limit=0", headers=owner)).status == 400
        r = await c.post(f"/api/devices/{dev0}/actions/activate", json={}, headers=owner)
        assert r.status == 409 and "IllegalTransition" in (await r.json())["error"]
        assert (await c.post(f"/api/devices/{dev0}/actions/fly", json={}, headers=owner)).status == 404
        r = await c.post(f"/api/devices/{dev0}/actions/transfer", json={"new_owner": "bob"}, headers=owner)
        assert r.status == 400 and "new_owner" in (await r.json())["error"]
        assert (await (await c.get("/api/session", headers=owner)).json())["roles"] == []
        assert (await c.get("/api/channel", headers=owner)).status == 200
        assert (await c.get("/api/gateways", headers=owner)).status == 200
        gw = await (await c.get("/api/gateways/gw-1", headers=owner)).json()
        assert gw["account"] == w.addresses["gateway"]
        assert (await c.get("/api/gateways/gw-nope", headers=owner)).status == 409
        r = await c.post(
            "/api/policies", json={"name": "meters", "publish": ["reading"], "subscribe": []}, headers=owner
        )
        assert r.status == 200, await r.text()
        pol = await (await c.get("/api/policies/meters", headers=owner)).json()
        assert pol["name"] == "meters" and pol["publish_streams"] == ["reading"]
        r = await c.post(
            "/enroll/policy", data={"csrf": csrf, "name": "lamps", "publish": "state"}, allow_redirects=False
        )
        assert r.status == 303

        # ---- the manufacturer registers a device (API) and a batch from CSV (page) with bad rows
        mfr = bearer(await w.login("manufacturer"))
        assert (await (await c.get("/api/session", headers=mfr)).json())["roles"] == ["manufacturer"]
        reg_rows = list(csv.DictReader(io.StringIO((w.factory / "registration.csv").read_text())))
        one = reg_rows[0]
        r = await c.post("/api/devices", json=dict(one), headers=mfr)
        assert r.status == 200, await r.text()
        text = (w.factory / "registration.csv").read_text() + "zz,bad,0x00,0x00,0x00\n"
        # the page upload, signed in as the manufacturer with its own cookie session
        await w.browser_login("manufacturer")
        page = await (await c.get("/enroll")).text()
        assert "Register one device (manufacturer)" in page
        mcsrf = page.split('name="csrf" value="')[1].split('"')[0]
        form = FormData()
        form.add_field("csrf", mcsrf)
        form.add_field("csv", text.encode(), filename="registration.csv")
        r = await c.post("/enroll/csv/register", data=form, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/jobs/")
        job_id = r.headers["Location"].rsplit("/", 1)[1]
        job = await wait_job(w, job_id, {"X-CSRF-Token": mcsrf})
        # one batch of registrations, then one registerDeviceKeyMany for the keys provisioning made
        assert job["summary"] == "registered 2 devices in 2 transactions; 2 rows failed", job
        reasons = {e["line"]: e["reason"] for e in job["errors"]}  # type: ignore[union-attr]
        assert "DeviceExists" in reasons[2] and "device_id must be 16 hex digits" in reasons[5]
        page = await (await c.get(f"/jobs/{job_id}")).text()
        assert "Rows that failed" in page and "DeviceExists" in page
        assert (await c.get(f"/api/jobs/{job_id}", headers=owner)).status == 404  # another actor's job
        r = await c.post("/api/jobs/register", headers=mfr, json={"csv": text})
        assert r.status == 202
        job = await wait_job(w, (await r.json())["id"], mfr)
        assert job["summary"].endswith("; 4 rows failed"), job  # type: ignore[union-attr]
        r = await c.post(
            "/enroll/device",
            data={
                "csrf": mcsrf,
                "device_id": "0x" + "77" * 8,
                "model": "m",
                "firmware_hash": "0x" + "11" * 32,
                "characteristics": "0x" + "22" * 32,
                "claim_hash": "0x" + "33" * 32,
            },
            allow_redirects=False,
        )
        assert r.status == 303

        # ---- the owner onboards them from their bundles (API job) and gets gw-1's keys sealed
        bundles = {p.name: json.loads(p.read_text()) for p in w.factory.glob("*.owner.json")}
        onboard_csv = "device_id,claim_code\n" + "".join(f"{r['device_id']},\n" for r in reg_rows)
        onboard_csv += "0x" + "77" * 8 + ",wrong-code\n"
        r = await c.post(
            "/api/jobs/onboard",
            headers=owner,
            json={"csv": onboard_csv, "policy": "sensors", "gateways": ["gw-1"], "bundles": bundles},
        )
        assert r.status == 202, await r.text()
        job = await wait_job(w, (await r.json())["id"], owner)
        assert job["summary"].startswith(
            "onboarded 3 devices (policy sensors), authorized 3 keys for gw-1"
        ), job  # type: ignore[union-attr]
        assert [e["line"] for e in job["errors"]] == [5]  # type: ignore[union-attr]
        gwkey = load_gateway_key(w.gateway_key)
        for r_ in reg_rows:
            d = bytes.fromhex(r_["device_id"])
            g = await w.ledger.grant(d, b"gw-1".ljust(32, b"\0"))
            k = unseal(g.sealed_key, gwkey, d, b"gw-1", 0, g.key_commitment)
            assert identity.key_commitment(k.k_dg) == g.key_commitment
        # onboarding from the page (CSV + bundle upload): the device is already active, so the row fails
        await w.browser_login("owner")
        page = await (await c.get("/enroll")).text()
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        form = FormData()
        form.add_field("csrf", csrf)
        form.add_field("csv", onboard_csv.encode(), filename="b.csv")
        for p in w.factory.glob("*.owner.json"):
            form.add_field("bundles", p.read_bytes(), filename=p.name)
        form.add_field("policy", "sensors")
        r = await c.post("/enroll/csv/onboard", data=form, allow_redirects=False)
        assert r.status == 303
        job = await wait_job(w, r.headers["Location"].rsplit("/", 1)[1], {"X-CSRF-Token": csrf})
        assert "is Active, not Manufactured" in json.dumps(job["errors"])

        # ---- authorize a gateway with a bundle, from the page and from the API
        did = reg_rows[1]["device_id"]
        bundle_path = w.factory / f"{did}.owner.json"
        form = FormData()
        form.add_field("csrf", csrf)
        form.add_field("gateway", "gw-1")
        form.add_field("bundle", bundle_path.read_bytes(), filename=bundle_path.name)
        r = await c.post(f"/devices/{did}/authorize", data=form, allow_redirects=False)
        assert r.status == 303, await r.text()
        r = await c.post(
            f"/api/devices/{did}/gateways",
            headers=owner,
            json={"gateway": "gw-1", "bundle": json.loads(bundle_path.read_text())},
        )
        assert r.status == 200
        r = await c.post(
            f"/api/devices/{dev0}/gateways",
            headers=owner,
            json={"gateway": "gw-1", "bundle": json.loads(bundle_path.read_text())},
        )
        assert r.status == 400 and "another device" in (await r.json())["error"]

        # ---- a firmware update: a maintainer records a new image for the three devices onboarded above,
        # the owner re-seals gw-1's keys from their bundles (API for two, page for the third)
        maint = Signer.generate(label="maintainer")
        await w.ledger.fund(maint.address, 10**18)
        admin_s = load_signer(w.keystores["admin"], PASSPHRASES["admin"])
        owner_s = load_signer(w.keystores["owner"], PASSPHRASES["owner"])
        await w.ledger.actor(admin_s).grant_role(Role.MAINTAINER, maint.address)
        updated = [bytes.fromhex(r_["device_id"]) for r_ in reg_rows]
        for d in updated:
            await w.ledger.actor(owner_s).approve_maintainer(d, maint.address)
        image2 = hashlib.sha256(b"image 2").digest()
        await w.ledger.actor(maint).record_firmware_many(updated, image2)
        gw1 = b"gw-1".ljust(32, b"\0")
        assert not any([(await w.ledger.grant(d, gw1)).current for d in updated])
        bundle_of = {d: json.loads((w.factory / f"{d.hex()}.owner.json").read_text()) for d in updated}
        r = await c.post("/api/jobs/reseal", headers=owner, json={"bundles": {}})
        assert r.status == 400 and "at least one" in (await r.json())["error"]
        r = await c.post(
            "/api/jobs/reseal",
            headers=owner,
            json={
                "bundles": {
                    **{f"{d.hex()}.owner.json": bundle_of[d] for d in updated[:2]},
                    "stray.owner.json": {"device_id": updated[2].hex()},
                },
                "gateways": ["gw-1"],
            },
        )
        assert r.status == 202, await r.text()
        job = await wait_job(w, (await r.json())["id"], owner)
        assert job["summary"].startswith("re-sealed 2 keys for 2 devices"), job  # type: ignore[union-attr]
        assert job["summary"].endswith("; 1 bundles refused"), job  # type: ignore[union-attr]
        [refused] = job["errors"]  # type: ignore[misc]
        assert refused["reason"].startswith("stray.owner.json is not a device owner bundle (missing field")
        form = FormData()
        form.add_field("csrf", csrf)
        third = w.factory / f"{updated[2].hex()}.owner.json"
        form.add_field("bundles", third.read_bytes(), filename=third.name)
        r = await c.post("/enroll/reseal", data=form, allow_redirects=False)
        assert r.status == 303, await r.text()
        job = await wait_job(w, r.headers["Location"].rsplit("/", 1)[1], {"X-CSRF-Token": csrf})
        assert job["summary"].startswith("re-sealed 1 keys for 1 devices"), job  # type: ignore[union-attr]
        page = await (await c.get(r.headers["Location"])).text()
        assert "re-sealed 1 keys" in page
        for d in updated:
            g = await w.ledger.grant(d, gw1)
            assert g.current and g.epoch == 1
            k = unseal(g.sealed_key, load_gateway_key(w.gateway_key), d, b"gw-1", 1, g.key_commitment)
            assert identity.key_commitment(k.k_dg) == g.key_commitment
        assert "re-seal keys (owner)" in await (await c.get("/enroll")).text()

        # ---- the operator registers a gateway (API and page)
        op = bearer(await w.login("operator"))
        r = await c.post(
            "/api/gateways",
            headers=op,
            json={"gateway": "gw-2", "x25519": "ab" * 32, "account": w.addresses["gateway"]},
        )
        assert r.status == 200, await r.text()
        await w.browser_login("operator")
        page = await (await c.get("/gateways")).text()
        assert "Register a gateway (operator)" in page and "gw-2" in page
        ocsrf = page.split('name="csrf" value="')[1].split('"')[0]
        r = await c.post(
            "/gateways",
            data={"csrf": ocsrf, "gateway": "gw-3", "x25519": "cd" * 32, "account": w.addresses["gateway"]},
            allow_redirects=False,
        )
        assert r.status == 303

        # ---- audit: anchored batches, and a record's inclusion under its on-chain root
        anchors = (await (await c.get("/api/audit/anchors", headers=op)).json())["anchors"]
        assert [(a["first_seq"], a["last_seq"]) for a in anchors] == [(1, 5)]
        proof = await (await c.get("/api/audit/inclusion?log=audit.log&seq=3", headers=op)).json()
        assert proof["included"] is True and proof["on_chain"] and proof["gateway"] == "gw-1"
        assert proof["root"] == "0x" + anchors[0]["root"]
        r = await c.get("/api/audit/inclusion?log=audit.log&seq=6", headers=op)
        assert r.status == 400 and "not in an anchored batch" in (await r.json())["error"]
        page = await (await c.get("/audit?log=audit.log&seq=2")).text()
        assert "Included: record 2" in page
        # a rewritten record no longer proves: its hash is not under the anchored root
        original = w.audit_log.read_text()
        lines = original.splitlines()
        rec = json.loads(lines[1])
        rec["hash"] = "00" * 32
        w.audit_log.write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
        proof = await (await c.get("/api/audit/inclusion?log=audit.log&seq=2", headers=op)).json()
        assert proof["included"] is False and "not anchored" in proof["problem"]
        w.audit_log.write_text(original)

        # ---- sign out ends the session
        assert (await c.delete("/api/session", headers=op)).status == 200
        assert (await c.get("/api/channel", headers=op)).status == 401
        r = await c.post("/logout", data={"csrf": ocsrf}, allow_redirects=False)
        assert r.status == 303 and (await c.get("/", allow_redirects=False)).status == 303

        # ---- every route was exercised
        declared = {(r.method, r.resource.canonical) for r in c.app.router.routes() if r.resource is not None}
        declared = {d for d in declared if d[0] != "HEAD"}
        assert declared - w.routes_hit == set()

        # ---- no secret in any response or log line
        secrets_ = [*list(PASSPHRASES.values()), "not the passphrase 991"]
        for name, path in w.keystores.items():
            secrets_.append(Account.decrypt(json.loads(path.read_text()), PASSPHRASES[name]).hex())
        for b in bundles.values():
            secrets_ += [b["secret"], b["claim_code"], b["salt"]]
        secrets_ += [d.secret.hex() for d in w.devices] + [d.claim_code.hex() for d in w.devices]
        everything = "\n".join(w.responses) + "\n".join(r.getMessage() for r in caplog.records)
        assert len(secrets_) > 20 and [s[:6] for s in secrets_ if s in everything] == []
        # no page or other answer carries a session token (Set-Cookie and the API's sign-in answer do)
        bodies = "\n".join(x for x in w.responses if not x.startswith("{'") and '"token":' not in x)
        assert not [t for t in w.sessions._sessions if t in bodies]


async def test_sessions_expire_and_cookies_are_secure_under_tls(tmp_path: Path) -> None:
    now = [1000.0]
    settings = ConsoleSettings(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem", session_ttl_s=60)
    async with world(tmp_path, n_devices=2, clock=lambda: now[0], settings=settings) as w:
        form = FormData()
        form.add_field("keystore", w.keystores["owner"].read_bytes(), filename="owner.json")
        form.add_field("passphrase", PASSPHRASES["owner"])
        r = await w.client.post("/login", data=form, allow_redirects=False)
        assert "Secure" in r.headers["Set-Cookie"]
        token = (await w.login("owner"))["token"]
        assert (
            await w.client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
        ).status == 200
        now[0] += 599  # the world's store idles out after 600 s
        assert (
            await w.client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
        ).status == 200
        now[0] += 601
        assert (
            await w.client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
        ).status == 401
        assert (await w.client.get("/api/session", headers={"Authorization": "Bearer forged"})).status == 401
