"""A whole site for gateway tests: real Mosquitto with the enforcer's files, a real EVM ledger with
every actor, devices onboarded as their actors would, and the gateway daemon serving them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.device import SimDevice
from gateway.broker import (
    AuthorizeGateway,
    BrokerSecret,
    ConnectionLog,
    MosquittoEnforcer,
    RightsMode,
    mosquitto_config_lines,
)
from gateway.service import Gateway
from gateway.settings import (
    DefenceSettings,
    GatewaySettings,
    HttpSettings,
    LedgerSettings,
    OfflineSettings,
    ProtocolSettings,
)
from ledger_bridge import EthereumTesterBackend, Ledger, Role, Signer
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.sealing import generate_gateway_key
from tests.conftest import require
from tests.mosquitto import MosquittoBroker, free_port, mosquitto_binary
from tests.tls import make_test_ca

ETH = 10**18
POLICY = hashlib.sha256(b"policy: sensors").digest()
FIRMWARE = hashlib.sha256(b"firmware 1.0").digest()


@dataclass
class Site:
    broker: MosquittoBroker
    ledger: Ledger
    actors: dict[str, Any]
    devices: list[ProvisionedDevice]
    gateways: dict[str, Gateway] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    keys: dict[str, GatewayPublicKey] = field(default_factory=dict)
    tls_ca: Path | None = None  # the broker listens with TLS only (certificate from this test CA)
    plain_port: int | None = None  # with tls and plain_listener: a plain loopback listener too

    def sim(self, i: int, gateway_id: str = "gw-a", **kw: Any) -> SimDevice:
        if self.tls_ca is not None:
            kw.setdefault("tls", ssl.create_default_context(cafile=str(self.tls_ca)))
        port = self.broker.port if kw.get("tls") is not None or self.plain_port is None else self.plain_port
        return SimDevice(self.devices[i], gateway_id=gateway_id, host="127.0.0.1", port=port, **kw)


async def start_gateway(
    site: Site, gateway_id: str, tmp: Path, *, enforcer: MosquittoEnforcer | None = None, **overrides: Any
) -> Gateway:
    settings = GatewaySettings(
        gateway_id=gateway_id,
        state_dir=tmp / gateway_id,
        key_file=tmp / f"{gateway_id}.key",
        broker=_broker_settings(site),
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
        http=HttpSettings(port=0),
    )
    gw = Gateway(
        settings,
        ledger=site.ledger,
        actor=site.actors[f"account-{gateway_id}"],
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


def _broker_settings(site: Site) -> Any:
    from gateway.settings import BrokerSettings

    return BrokerSettings(host="127.0.0.1", port=site.broker.port, accounts=2, tls_ca=site.tls_ca)


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
    password_file, acl_file = broker.directory / "passwords", broker.directory / "acl"
    broker.extra_config = mosquitto_config_lines(password_file, acl_file)
    ca = None
    plain_port = None
    if tls:  # the one listener speaks TLS only, with a certificate from a fresh test CA
        ca = make_test_ca(broker.directory, write=broker.write_file)
        broker.extra_config += ca.mosquitto_lines()
        if plain_listener:  # and a second, plain listener on loopback (same accounts): TLS vs plain
            plain_port = free_port()
            broker.extra_config.append(f"listener {plain_port} 127.0.0.1")
    enforcer = MosquittoEnforcer(
        password_file=password_file,
        acl_file=acl_file,
        reload=broker.reload,
        broker_address=(broker.host, broker.port),
        broker_tls=None if ca is None else ssl.create_default_context(cafile=str(ca.ca_file)),
        rights=rights,
        min_reload_interval=0.3,
        urgent_reload_interval=0.1,
        file_group=broker.file_group,
        connection_log=ConnectionLog(broker.log_path),  # every cut-off confirmed in the broker's log
    )
    actors: dict[str, Any] = {}
    for gid in gateway_ids:
        actors[f"broker-{gid}"] = BrokerSecret.generate().reveal()
    # two accounts per gateway: the daemon's, and one for tests listening as an application would
    enforcer.stage(
        [
            AuthorizeGateway(gateway_id=gid, secret=BrokerSecret(actors[f"broker-{gid}"]), connections=2)
            for gid in gateway_ids
        ]
    )
    enforcer.write_files()
    with broker:
        async with Ledger(backend=ledger_backend or EthereumTesterBackend()) as ledger:
            names = ["admin", "manufacturer", "owner", "operator", *[f"account-{g}" for g in gateway_ids]]
            signers = {n: Signer.generate(label=n) for n in names}
            for s in signers.values():
                await ledger.fund(s.address, 100 * ETH)
            await ledger.deploy(admin=signers["admin"])
            for n, s in signers.items():
                actors[n] = ledger.actor(s)
            await actors["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)
            await actors["admin"].grant_role(Role.OPERATOR, signers["operator"].address)
            await actors["owner"].define_policy(POLICY, publish=list(policy_streams), subscribe=["config"])
            devices = [
                ProvisionedDevice.generate(model="diams-sensor", serial=f"SN{i:05d}", firmware_hash=FIRMWARE)
                for i in range(n_devices)
            ]
            the_site = Site(broker=broker, ledger=ledger, actors=actors, devices=devices,
                            tls_ca=None if ca is None else ca.ca_file, plain_port=plain_port)
            gw_keys = []
            for gid in gateway_ids:
                pub = generate_gateway_key(tmp / f"{gid}.key")
                await actors["operator"].register_gateway(
                    onchain_gateway_id(gid.encode()),
                    x25519_public_key=pub,
                    account=signers[f"account-{gid}"].address,
                )
                the_site.keys[gid] = GatewayPublicKey(gateway_id=gid.encode(), x25519_public_key=pub)
                gw_keys.append(the_site.keys[gid])
            await onboard(
                manufacturer=actors["manufacturer"],
                owner=actors["owner"],
                devices=devices,
                gateways=gw_keys,
                policy_id=POLICY,
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
