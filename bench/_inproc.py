"""A site with its gateway daemons in this process, for the field benchmarks (``bench_firmware``,
``bench_agent_rss``): anvil on loopback, Mosquitto with the enforcer's files, a channel enrolled by
``firmware_sim.site.enroll``, and one ``Gateway`` per id (the first manages the broker's files).

The benchmarks import nothing from tests/ (tests/gateway/stack.py builds the same thing on eth-tester
for the tests, with ``require``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.broker import MosquittoBroker
from firmware_sim.site import SitePlan, account_name, admit_gateways, enforce_on, enroll, gateway_settings
from gateway.broker import BrokerSecret
from gateway.service import Gateway
from gateway.settings import LedgerSettings, ProtocolSettings
from ledger_bridge import Ledger, RpcBackend
from ledger_bridge.anvil import AnvilNode
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.firmware import device_from_owner_bundle


@dataclass
class InprocSite:
    broker: MosquittoBroker
    node: AnvilNode
    ledger: Ledger
    actors: dict[str, Any]
    signers: dict[str, Any]
    devices: list[ProvisionedDevice]
    keys: dict[str, GatewayPublicKey]
    secrets: dict[str, str]
    policy_id: bytes
    gateways: dict[str, Gateway] = field(default_factory=dict)

    async def onboard_bundle(self, owner_file: Path, gateway_ids: tuple[str, ...] = ("gw-a",)) -> bytes:
        """Onboard a device from its owner bundle (``diams-agent provision``) for ``gateway_ids``."""
        dev = device_from_owner_bundle(json.loads(owner_file.read_text()))
        await onboard(
            manufacturer=self.actors["manufacturer"],
            owner=self.actors["owner"],
            devices=[dev],
            gateways=[self.keys[g] for g in gateway_ids],
            policy_id=self.policy_id,
        )
        return dev.device_id


@contextlib.asynccontextmanager
async def inproc_site(
    tmp: Path, *, n_devices: int, gateway_ids: tuple[str, ...] = ("gw-a",)
) -> AsyncIterator[InprocSite]:
    broker = MosquittoBroker()
    enforcer = enforce_on(
        broker, extra_config=["max_connections -1"], min_reload_interval=0.3, urgent_reload_interval=0.1
    )
    secrets = {gid: BrokerSecret.generate().reveal() for gid in gateway_ids}
    admit_gateways(enforcer, secrets, connections=2)  # the daemon's account and one for an observer
    plan = SitePlan(gateway_ids=gateway_ids, devices=n_devices, publish=("telemetry",))
    with broker, AnvilNode() as node:
        async with Ledger(backend=RpcBackend(url=node.url, name="anvil")) as ledger:
            enrolled = await enroll(ledger, plan, key_dir=tmp)
            s = InprocSite(
                broker=broker,
                node=node,
                ledger=ledger,
                actors=dict(enrolled.actors),
                signers=dict(enrolled.signers),
                devices=list(enrolled.devices),
                keys=dict(enrolled.gateway_keys),
                secrets=secrets,
                policy_id=plan.policy_id,
            )
            tasks: list[asyncio.Task[None]] = []
            ledgers: list[Ledger] = []
            try:
                for n, gid in enumerate(gateway_ids):
                    settings = gateway_settings(
                        gid,
                        key_dir=tmp,
                        broker=broker,
                        accounts=2,
                        ledger=LedgerSettings(
                            mode="rpc",
                            url=node.url,
                            poll_interval=0.2,
                            anchor_interval=3600,
                            deployed_block=ledger.channel.deployed_block,
                        ),
                        protocol=ProtocolSettings(proof_timeout=5.0, session_lifetime=600),
                    )
                    # each gateway its own ledger connection (its own worker thread), as its own process has
                    own = Ledger(
                        backend=RpcBackend(url=node.url, name=f"anvil-{gid}"), channel=ledger.channel
                    )
                    await own.__aenter__()
                    ledgers.append(own)
                    gw = Gateway(
                        settings,
                        ledger=own,
                        actor=own.actor(s.signers[account_name(gid)]),
                        enforcer=enforcer if n == 0 else None,
                        broker_password=secrets[gid],
                    )
                    await gw.__aenter__()
                    ready = asyncio.Event()
                    tasks.append(asyncio.create_task(gw.serve(ready=ready.set)))
                    await asyncio.wait_for(ready.wait(), 120)
                    s.gateways[gid] = gw
                yield s
            finally:
                for gw in s.gateways.values():
                    gw.stop()
                for t in tasks:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(t, 20)
                for gw in s.gateways.values():
                    await gw.__aexit__(None, None, None)
                for own in ledgers:
                    await own.__aexit__(None, None, None)
