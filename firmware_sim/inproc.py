"""A whole site with its gateway daemons in this process, for the tests and the benchmarks: a private
Mosquitto with the enforcer's files, a ledger with every actor, devices onboarded as their actors would
onboard them (``firmware_sim.site.enroll``), and one ``Gateway`` per id serving them.

The ledger is eth-tester in this process unless the caller passes another backend (``ledger_backend``)
or an anvil node (``node``: each gateway then gets its own connection to it, as its own process would).
The first gateway manages the broker's password/ACL files; the others only serve.

The test policy for a missing Mosquitto (fail in CI, skip elsewhere) stays in ``tests/gateway/stack.py``;
here a missing broker is a ``MosquittoError`` from the runner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from device_agent.core import topics
from gateway.broker import BrokerSecret, ConnectionLog, MosquittoEnforcer, RightsMode
from gateway.mqtt import MqttClient
from gateway.service import Gateway
from gateway.settings import (
    BrokerSettings,
    DefenceSettings,
    EnforcementSettings,
    LedgerSettings,
    OfflineSettings,
    ProtocolSettings,
)
from ledger_bridge import EthereumTesterBackend, Ledger, RpcBackend, Signer
from ledger_bridge.anvil import AnvilNode
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.firmware import device_from_owner_bundle

from .broker import MosquittoBroker, free_port
from .device import SimDevice
from .site import FIRMWARE, POLICY, SitePlan, account_name, admit_gateways, enforce_on, enroll
from .site import gateway_settings as site_gateway_settings
from .tls import make_test_ca

__all__ = ["FIRMWARE", "POLICY", "Serving", "Site", "site", "start_gateway", "stop_gateway"]


@dataclass
class Site:
    broker: MosquittoBroker
    ledger: Ledger
    actors: dict[str, Any]  # the actors' handles, and each gateway's broker secret as "broker-<id>"
    devices: list[ProvisionedDevice]
    signers: dict[str, Signer] = field(default_factory=dict)
    policy_id: bytes = POLICY
    gateways: dict[str, Gateway] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    keys: dict[str, GatewayPublicKey] = field(default_factory=dict)
    enforcer: MosquittoEnforcer | None = None  # the broker's, managed by the first gateway
    tls_ca: Path | None = None  # the broker's listener speaks TLS only (certificate from this test CA)
    plain_port: int | None = None  # with tls and plain_listener: a plain loopback listener too
    node: AnvilNode | None = None  # the anvil node the ledger runs on (None: eth-tester in process)
    ready_timeout: float = 15.0  # how long a gateway may take to come up
    poll_interval: float = 0.05  # how often the gateways poll the ledger (unless ``ledger=`` says)
    own_ledgers: dict[str, Ledger] = field(default_factory=dict)  # with a node: each gateway's connection

    @property
    def secrets(self) -> dict[str, str]:
        """Each gateway's broker password (its accounts ``gateway-<id>.<n>``)."""
        return {k.removeprefix("broker-"): v for k, v in self.actors.items() if k.startswith("broker-")}

    def sim(self, i: int, gateway_id: str = "gw-a", **kw: Any) -> SimDevice:
        if self.tls_ca is not None:
            kw.setdefault("tls", ssl.create_default_context(cafile=str(self.tls_ca)))
        port = self.broker.port if kw.get("tls") is not None or self.plain_port is None else self.plain_port
        return SimDevice(self.devices[i], gateway_id=gateway_id, host="127.0.0.1", port=port, **kw)

    async def listener(
        self, gateway_id: str = "gw-a", topic: str = topics.every(topics.VERIFIED), tls: Any = None
    ) -> tuple[MqttClient, list[tuple[bytes, bytes]]]:
        """An application reading verified data, with the gateway's second broker account; -> the
        client and the list its messages land in."""
        got: list[tuple[bytes, bytes]] = []
        user = f"gateway-{gateway_id}.1"
        client = await MqttClient.connect(
            "127.0.0.1",
            self.broker.port,
            client_id=user,
            username=user,
            password=self.secrets[gateway_id],
            on_message=lambda t, p: got.append((t, p)),
            tls=tls,
        )
        await client.subscribe([(topic, 1)])
        return client, got

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


async def start_gateway(
    site: Site, gateway_id: str, tmp: Path, *, enforcer: MosquittoEnforcer | None = None, **overrides: Any
) -> Gateway:
    """Start the gateway ``gateway_id`` in this process and wait until it serves. ``overrides``: the
    settings sections ``ledger=``, ``protocol=``, ``defence=``, ``offline=``, ``enforcement=`` (default
    "none": the site's enforcer object, if passed, manages the broker); the rest go to ``Gateway``."""
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
                url="http://unused" if site.node is None else site.node.url,
                poll_interval=site.poll_interval,
                anchor_interval=3600,
                deployed_block=site.ledger.channel.deployed_block,
            ),
        ),
        protocol=overrides.pop("protocol", ProtocolSettings(proof_timeout=3.0, session_lifetime=600)),
        defence=overrides.pop("defence", DefenceSettings()),
        offline=overrides.pop("offline", OfflineSettings()),
        enforcement=overrides.pop("enforcement", EnforcementSettings()),
    )
    ledger, actor = site.ledger, site.actors[account_name(gateway_id)]
    if site.node is not None:  # its own connection (its own worker thread), as its own process has
        ledger = Ledger(
            backend=RpcBackend(url=site.node.url, name=f"anvil-{gateway_id}"), channel=site.ledger.channel
        )
        await ledger.__aenter__()
        site.own_ledgers[gateway_id] = ledger
        actor = ledger.actor(site.signers[account_name(gateway_id)])
    gw = Gateway(
        settings,
        ledger=ledger,
        actor=actor,
        enforcer=enforcer,
        broker_password=site.actors[f"broker-{gateway_id}"],
        **overrides,
    )
    await gw.__aenter__()
    ready = asyncio.Event()
    site.tasks[gateway_id] = asyncio.create_task(gw.serve(ready=ready.set))
    await asyncio.wait_for(ready.wait(), site.ready_timeout)
    site.gateways[gateway_id] = gw
    return gw


class Serving(Protocol):
    """A site whose gateways run in this process: each one's daemon and its ``serve()`` task."""

    gateways: dict[str, Gateway]
    tasks: dict[str, asyncio.Task[None]]


async def stop_gateway(site: Serving, gateway_id: str) -> None:
    """Stop the gateway ``gateway_id`` cleanly (its task ends, its resources close)."""
    gw = site.gateways.pop(gateway_id)
    gw.stop()
    try:
        await asyncio.wait_for(site.tasks.pop(gateway_id), 10)
        await gw.__aexit__(None, None, None)
    finally:
        own = site.own_ledgers.pop(gateway_id, None) if isinstance(site, Site) else None
        if own is not None:
            await own.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def site(
    tmp: Path,
    *,
    n_devices: int = 3,
    gateway_ids: tuple[str, ...] = ("gw-a",),
    policy_streams: tuple[str, ...] = ("telemetry", "status"),
    gateway_settings: dict[str, Any] | None = None,
    ledger_backend: Any = None,
    node: AnvilNode | None = None,
    rights: RightsMode = "patterns",
    tls: bool = False,
    plain_listener: bool = False,
    extra_config: Sequence[str] = (),
    ready_timeout: float = 15.0,
    poll_interval: float = 0.05,
) -> AsyncIterator[Site]:
    """``gateway_settings``: keyword overrides for every gateway (``protocol=``, ``defence=``,
    ``offline=``, ``ledger=``), as ``start_gateway`` takes them. The ledger: ``ledger_backend``, else
    ``node``'s (a running anvil), else eth-tester. ``extra_config``: more mosquitto.conf lines."""
    broker = MosquittoBroker()
    broker_lines: list[str] = list(extra_config)
    ca = None
    plain_port = None
    if tls:  # the one listener speaks TLS only, with a certificate from a fresh test CA
        ca = make_test_ca(broker.directory, write=broker.write_file)
        broker_lines += ca.mosquitto_lines()
        if plain_listener:  # and a second, plain listener on loopback (same accounts): TLS vs plain
            plain_port = free_port()
            broker_lines.append(f"listener {plain_port} 127.0.0.1")
    enforcer = enforce_on(
        broker,
        extra_config=broker_lines,
        min_reload_interval=0.3,
        urgent_reload_interval=0.1,
        rights=rights,
        connection_log=ConnectionLog(broker.log_path),  # every cut-off confirmed in the broker's log
        broker_tls=None if ca is None else ssl.create_default_context(cafile=str(ca.ca_file)),
    )
    broker_secrets = {gid: BrokerSecret.generate().reveal() for gid in gateway_ids}
    # two accounts per gateway: the daemon's, and one for listening as an application would
    admit_gateways(enforcer, broker_secrets, connections=2)
    plan = SitePlan(gateway_ids=gateway_ids, devices=n_devices, publish=policy_streams)
    if ledger_backend is None:
        ledger_backend = EthereumTesterBackend() if node is None else RpcBackend(url=node.url, name="anvil")
    with broker:
        async with Ledger(backend=ledger_backend) as ledger:
            enrolled = await enroll(ledger, plan, key_dir=tmp)
            actors: dict[str, Any] = dict(enrolled.actors)
            actors.update({f"broker-{gid}": secret for gid, secret in broker_secrets.items()})
            the_site = Site(
                broker=broker,
                ledger=ledger,
                actors=actors,
                devices=list(enrolled.devices),
                signers=dict(enrolled.signers),
                policy_id=plan.policy_id,
                keys=dict(enrolled.gateway_keys),
                enforcer=enforcer,
                tls_ca=None if ca is None else ca.ca_file,
                plain_port=plain_port,
                node=node,
                ready_timeout=ready_timeout,
                poll_interval=poll_interval,
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
                for own in the_site.own_ledgers.values():  # a gateway that never came up
                    await own.__aexit__(None, None, None)
