"""A whole site for gateway tests: real Mosquitto with the enforcer's files, a real EVM ledger with
every actor, devices onboarded as their actors would, and the gateway daemon serving them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.broker import MosquittoBroker, free_port, mosquitto_binary
from firmware_sim.device import SimDevice
from firmware_sim.site import FIRMWARE, POLICY, SitePlan, account_name, admit_gateways, enforce_on, enroll
from firmware_sim.site import gateway_settings as site_gateway_settings
from gateway.broker import BrokerSecret, ConnectionLog, MosquittoEnforcer, RightsMode
from gateway.service import Gateway
from gateway.settings import (
    BrokerSettings,
    DefenceSettings,
    LedgerSettings,
    OfflineSettings,
    ProtocolSettings,
)
from ledger_bridge import EthereumTesterBackend, Ledger
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice
from tests.conftest import require
from tests.tls import make_test_ca

__all__ = ["FIRMWARE", "POLICY", "Site", "site", "start_gateway", "stop_gateway"]


@dataclass
class Site:
    broker: MosquittoBroker
    ledger: Ledger
    actors: dict[str, Any]
    devices: list[ProvisionedDevice]
    gateways: dict[str, Gateway] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    keys: dict[str, GatewayPublicKey] = field(default_factory=dict)
    enforcer: MosquittoEnforcer | None = None  # the broker's, managed by the first gateway
    tls_ca: Path | None = None  # the broker's listener speaks TLS only (certificate from this test CA)
    plain_port: int | None = None  # with tls and plain_listener: a plain loopback listener too

    def sim(self, i: int, gateway_id: str = "gw-a", **kw: Any) -> SimDevice:
        if self.tls_ca is not None:
            kw.setdefault("tls", ssl.create_default_context(cafile=str(self.tls_ca)))
        port = self.broker.port if kw.get("tls") is not None or self.plain_port is None else self.plain_port
        return SimDevice(self.devices[i], gateway_id=gateway_id, host="127.0.0.1", port=port, **kw)


async def start_gateway(
    site: Site, gateway_id: str, tmp: Path, *, enforcer: MosquittoEnforcer | None = None, **overrides: Any
) -> Gateway:
    settings = site_gateway_settings(
        gateway_id,
        key_dir=tmp,
        broker=site.broker,
        broker_settings=BrokerSettings(host=site.broker.host, port=site.broker.port, accounts=2,
                                       tls_ca=site.tls_ca),
        ledger=overrides.pop(
            "ledger",
            LedgerSettings(
                mode="rpc",
                url="http://unused",
                poll_interval=0.05,
                anchor_interval=3600,
                deployed_block=site.ledger.channel.deployed_block,
            ),
        ),
        protocol=overrides.pop("protocol", ProtocolSettings(proof_timeout=3.0, session_lifetime=600)),
        defence=overrides.pop("defence", DefenceSettings()),
        offline=overrides.pop("offline", OfflineSettings()),
    )
    gw = Gateway(
        settings,
        ledger=site.ledger,
        actor=site.actors[account_name(gateway_id)],
        enforcer=enforcer,
        broker_password=site.actors[f"broker-{gateway_id}"],
        **overrides,
    )
    await gw.__aenter__()
    ready = asyncio.Event()
    site.tasks[gateway_id] = asyncio.create_task(gw.serve(ready=ready.set))
    await asyncio.wait_for(ready.wait(), 15)
    site.gateways[gateway_id] = gw
    return gw


async def stop_gateway(site: Site, gateway_id: str) -> None:
    gw = site.gateways.pop(gateway_id)
    gw.stop()
    await asyncio.wait_for(site.tasks.pop(gateway_id), 10)
    await gw.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def site(
    tmp: Path,
    *,
    n_devices: int = 3,
    gateway_ids: tuple[str, ...] = ("gw-a",),
    policy_streams: tuple[str, ...] = ("telemetry", "status"),
    gateway_settings: dict[str, Any] | None = None,
    ledger_backend: Any = None,
    rights: RightsMode = "patterns",
    tls: bool = False,
    plain_listener: bool = False,
) -> AsyncIterator[Site]:
    """``gateway_settings``: keyword overrides for every gateway (``protocol=``, ``defence=``,
    ``offline=``, ``ledger=``), as ``start_gateway`` takes them. ``ledger_backend``: eth-tester when None."""
    require(mosquitto_binary() is not None, "mosquitto")
    broker = MosquittoBroker()
    tls_lines: list[str] = []
    ca = None
    plain_port = None
    if tls:  # the one listener speaks TLS only, with a certificate from a fresh test CA
        ca = make_test_ca(broker.directory, write=broker.write_file)
        tls_lines = ca.mosquitto_lines()
        if plain_listener:  # and a second, plain listener on loopback (same accounts): TLS vs plain
            plain_port = free_port()
            tls_lines.append(f"listener {plain_port} 127.0.0.1")
    enforcer = enforce_on(
        broker,
        extra_config=tls_lines,
        min_reload_interval=0.3,
        urgent_reload_interval=0.1,
        rights=rights,
        connection_log=ConnectionLog(broker.log_path),  # every cut-off confirmed in the broker's log
        broker_tls=None if ca is None else ssl.create_default_context(cafile=str(ca.ca_file)),
    )
    broker_secrets = {gid: BrokerSecret.generate().reveal() for gid in gateway_ids}
    # two accounts per gateway: the daemon's, and one for tests listening as an application would
    admit_gateways(enforcer, broker_secrets, connections=2)
    plan = SitePlan(gateway_ids=gateway_ids, devices=n_devices, publish=policy_streams)
    with broker:
        async with Ledger(backend=ledger_backend or EthereumTesterBackend()) as ledger:
            enrolled = await enroll(ledger, plan, key_dir=tmp)
            actors: dict[str, Any] = dict(enrolled.actors)
            actors.update({f"broker-{gid}": secret for gid, secret in broker_secrets.items()})
            the_site = Site(
                broker=broker,
                ledger=ledger,
                actors=actors,
                devices=list(enrolled.devices),
                keys=dict(enrolled.gateway_keys),
                enforcer=enforcer,
                tls_ca=None if ca is None else ca.ca_file,
                plain_port=plain_port,
            )
            first = True
            try:
                for gid in gateway_ids:
                    # One enforcer per broker: the first gateway manages it; the others only serve.
                    await start_gateway(
                        the_site,
                        gid,
                        tmp,
                        enforcer=enforcer if first else None,
                        **dict(gateway_settings or {}),
                    )
                    first = False
                yield the_site
            finally:
                for gid in list(the_site.gateways):
                    await stop_gateway(the_site, gid)
