"""A channel with every actor and a few devices on eth-tester, and the console app over it."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient, TestServer

from device_agent.agent.provision import provision
from gateway.audit import AuditLog
from ledger_bridge import EthereumTesterBackend, Ledger, Role
from ledger_bridge.console import ConsoleService, SessionStore, create_app
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.index import IdentityIndex
from ledger_bridge.keystore import create_keystore
from ledger_bridge.sealing import generate_gateway_key

ETH = 10**18
PASSPHRASES = {
    name: f"{name} passphrase 7f3c" for name in ("admin", "manufacturer", "owner", "operator", "gateway")
}
POLICY = b"sensors".ljust(32, b"\0")
FIRMWARE = hashlib.sha256(b"fw").digest()


@dataclass
class World:
    ledger: Ledger
    service: ConsoleService
    client: TestClient  # type: ignore[type-arg]
    keystores: dict[str, Path]
    addresses: dict[str, str]
    devices: list[ProvisionedDevice]
    factory: Path
    audit_log: Path
    sessions: SessionStore
    gateway_key: Path
    routes_hit: set[tuple[str, str]]
    responses: list[str]

    async def login(self, actor: str) -> dict[str, Any]:
        """Sign in through the API; -> the session view with its bearer token."""
        resp = await self.client.post(
            "/api/session",
            json={
                "keystore": json.loads(self.keystores[actor].read_text()),
                "passphrase": PASSPHRASES[actor],
            },
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def browser_login(self, actor: str) -> str:
        """Sign in through the page (cookie); -> the CSRF token read from a page."""
        from aiohttp import FormData

        form = FormData()
        form.add_field("keystore", self.keystores[actor].read_bytes(), filename="k.json")
        form.add_field("passphrase", PASSPHRASES[actor])
        resp = await self.client.post("/login", data=form, allow_redirects=False)
        assert resp.status == 303, await resp.text()
        page = await (await self.client.get("/enroll")).text()
        return page.split('name="csrf" value="')[1].split('"')[0]


@contextlib.asynccontextmanager
async def world(
    tmp: Path, *, n_devices: int = 4, clock: Any = None, settings: Any = None
) -> AsyncIterator[World]:
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        keystores, signers = {}, {}
        for name in PASSPHRASES:
            keystores[name] = tmp / f"{name}.json"
            signers[name] = create_keystore(keystores[name], PASSPHRASES[name], label=name)
            await ledger.fund(signers[name].address, 100 * ETH)
        await ledger.deploy(admin=signers["admin"])
        actors = {n: ledger.actor(s) for n, s in signers.items()}
        await actors["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)
        await actors["admin"].grant_role(Role.OPERATOR, signers["operator"].address)
        await actors["owner"].define_policy(POLICY, publish=["telemetry"], subscribe=["config"])
        gw_key = tmp / "gw-1.key"
        pub = generate_gateway_key(gw_key)
        await actors["operator"].register_gateway(
            b"gw-1".ljust(32, b"\0"), x25519_public_key=pub, account=signers["gateway"].address
        )
        devices = [
            ProvisionedDevice.generate(model="sensor", serial=f"S{i}", firmware_hash=FIRMWARE)
            for i in range(n_devices)
        ]
        await onboard(
            manufacturer=actors["manufacturer"],
            owner=actors["owner"],
            devices=devices,
            gateways=[GatewayPublicKey(gateway_id=b"gw-1", x25519_public_key=pub)],
            policy_id=POLICY,
        )
        # devices made by `diams-agent provision`, registered but not yet claimed: for enrolment
        factory = tmp / "factory"
        fw = tmp / "fw.bin"
        fw.write_bytes(b"fw image")
        for n in range(3):
            provision(model="pi", serial=f"P{n}", mac=f"02:00:00:00:01:0{n}", firmware=fw, out=factory)
        audit_log = tmp / "audit.log"
        log = AuditLog(audit_log)
        for d in devices:
            log.append("authenticated", device=d.device_id.hex())
        log.append("rejected", device=devices[0].device_id.hex(), reason="bad_proof", counter=3)
        anchor = log.next_anchor()
        assert anchor is not None
        out = await actors["gateway"].anchor(
            b"gw-1".ljust(32, b"\0"),
            merkle_root=anchor.root,
            count=anchor.count,
            first_seq=anchor.first_seq,
            last_seq=anchor.last_seq,
        )
        log.mark_anchored(anchor, out.transaction_hash)
        log.append("clone_detected", device=devices[1].device_id.hex(), counter=1)  # not anchored yet
        log.close()
        index = IdentityIndex(tmp / "index.sqlite", start_block=ledger.channel.deployed_block)
        service = ConsoleService(ledger=ledger, index=index, audit_logs=[audit_log], sync_interval_s=0.2)
        sessions = SessionStore(ttl_s=600, **({"clock": clock} if clock else {}))
        app = create_app(service, sessions=sessions, **({"settings": settings} if settings else {}))
        routes_hit: set[tuple[str, str]] = set()
        responses: list[str] = []

        async def record(request: Any, response: Any) -> None:
            route = request.match_info.route
            if route.resource is not None:
                routes_hit.add((route.method, route.resource.canonical))
            body = getattr(response, "body", None)
            if isinstance(body, bytes):
                responses.append(body.decode("utf-8", "replace"))
            responses.append(str(dict(response.headers)))

        app.on_response_prepare.append(record)
        # a request that hangs fails where it hangs (the world's chain calls are bounded by the ledger)
        client = TestClient(TestServer(app), timeout=ClientTimeout(total=120))
        await client.start_server()
        try:
            yield World(
                ledger=ledger,
                service=service,
                client=client,
                keystores=keystores,
                addresses={n: s.address for n, s in signers.items()},
                devices=devices,
                factory=factory,
                audit_log=audit_log,
                sessions=sessions,
                gateway_key=gw_key,
                routes_hit=routes_hit,
                responses=responses,
            )
        finally:
            await client.close()
            index.close()
