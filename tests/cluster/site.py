"""A site on a RabbitMQ cluster: the ledger with every actor, devices onboarded for every gateway, and
gateway daemons enforcing through their HTTP endpoints (``enforcement.mode = "http"``).

The cluster's nodes all ask one shared endpoint port, on which every gateway listens (SO_REUSEPORT):
the kernel spreads the broker's connections over the live gateways, so any of them can die. Each
gateway also listens on its own port, where the others forward the questions only it can answer
(its account, the sessions it holds). Gateway ``i`` connects to node ``i % nodes``. Gateway accounts
are RabbitMQ internal users (``enforcement.gateway_accounts = "broker"``) unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.core import topics
from firmware_sim.broker import free_port
from firmware_sim.device import SimDevice
from firmware_sim.inproc import stop_gateway
from firmware_sim.rabbitmq import ADMIN, RabbitCluster
from firmware_sim.site import SitePlan, account_name, enroll
from gateway.broker import BrokerSecret, HttpEnforcer, RabbitManagement
from gateway.mqtt import MqttClient
from gateway.service import Gateway
from gateway.settings import (
    BrokerSettings,
    GatewaySettings,
    HttpSettings,
    LedgerSettings,
    ProtocolSettings,
)
from ledger_bridge import EthereumTesterBackend, Ledger
from ledger_bridge.enrollment import ProvisionedDevice
from tests.waiting import eventually


@dataclass
class ClusterSite:
    cluster: RabbitCluster
    shared_port: int
    ledger: Ledger
    actors: dict[str, Any]
    devices: list[ProvisionedDevice]
    private_ports: dict[str, int]
    gateway_accounts: str = "broker"
    gateways: dict[str, Gateway] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def port_of(self, node: int) -> int:
        return self.cluster.nodes[node].mqtt_port

    def sim(self, i: int, *, gateway_id: str, node: int, **kw: Any) -> SimDevice:
        return SimDevice(
            self.devices[i], gateway_id=gateway_id, host="127.0.0.1", port=self.port_of(node), **kw
        )

    def refusals(self, reason: str) -> int:
        return sum(gw.metrics.get("authz_refused", reason) for gw in self.gateways.values())

    def enforcer(self, gateway_id: str) -> HttpEnforcer:
        enforcer = self.gateways[gateway_id]._enforcer
        assert isinstance(enforcer, HttpEnforcer)
        return enforcer

    async def listener(
        self, gateway_id: str, node: int, topic: str = topics.every(topics.VERIFIED)
    ) -> tuple[MqttClient, list[Any]]:
        """An application reading verified data, with the gateway's second broker account."""
        got: list[Any] = []
        user = f"gateway-{gateway_id}.1"
        client = await MqttClient.connect(
            "127.0.0.1",
            self.port_of(node),
            client_id=user,
            username=user,
            password=self.actors[f"broker-{gateway_id}"],
            on_message=lambda t, p: got.append((t, p)),
        )
        await client.subscribe([(topic, 1)])
        return client, got


async def start_gateway(site: ClusterSite, gateway_id: str, tmp: Path, node: int) -> Gateway:
    c = site.cluster
    management = RabbitManagement(c.management_urls, username=ADMIN, password=c.admin_password)
    enforcer = HttpEnforcer(
        gateway_id=gateway_id,
        closer=management,
        accounts=management if site.gateway_accounts == "broker" else None,
        listen=("127.0.0.1", site.private_ports[gateway_id]),
        shared_listen=("127.0.0.1", site.shared_port),
        peers={
            gid: f"http://127.0.0.1:{port}/auth"
            for gid, port in site.private_ports.items()
            if gid != gateway_id
        },
    )
    settings = GatewaySettings(
        gateway_id=gateway_id,
        state_dir=tmp / gateway_id,
        key_file=tmp / f"{gateway_id}.key",
        broker=BrokerSettings(
            host="127.0.0.1",
            port=site.port_of(node),
            accounts=2,
            alternates=",".join(f"127.0.0.1:{n.mqtt_port}" for n in c.nodes if n.index != node),
        ),
        ledger=LedgerSettings(
            mode="rpc",
            url="http://unused",
            poll_interval=0.05,
            anchor_interval=3600,
            deployed_block=site.ledger.channel.deployed_block,
        ),
        protocol=ProtocolSettings(proof_timeout=3.0, session_lifetime=600),
        http=HttpSettings(port=0),
    )
    gw = Gateway(
        settings,
        ledger=site.ledger,
        actor=site.actors[account_name(gateway_id)],
        enforcer=enforcer,
        broker_password=site.actors[f"broker-{gateway_id}"],
    )
    await gw.__aenter__()
    ready = asyncio.Event()
    site.tasks[gateway_id] = asyncio.create_task(gw.serve(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 30)
    except BaseException:
        site.tasks.pop(gateway_id).cancel()
        await gw.__aexit__(None, None, None)
        raise
    site.gateways[gateway_id] = gw
    return gw


async def crash_gateway(site: ClusterSite, gateway_id: str) -> Gateway:
    """The gateway process dies: its broker connection drops without DISCONNECT, its endpoint vanishes."""
    gw = site.gateways.pop(gateway_id)
    task = site.tasks.pop(gateway_id)
    if gw.mqtt is not None:
        gw.mqtt.abort()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await gw.__aexit__(None, None, None)  # closes its listening sockets, as the kernel would
    return gw


@contextlib.asynccontextmanager
async def cluster_site(
    tmp: Path,
    cluster: RabbitCluster,
    shared_port: int,
    *,
    n_devices: int,
    gateway_ids: tuple[str, ...] = ("gw-a", "gw-b"),
    gateway_accounts: str = "broker",
) -> AsyncIterator[ClusterSite]:
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        enrollment = await enroll(ledger, SitePlan(gateway_ids=gateway_ids, devices=n_devices), key_dir=tmp)
        actors: dict[str, Any] = dict(enrollment.actors)
        for gid in gateway_ids:
            actors[f"broker-{gid}"] = BrokerSecret.generate().reveal()
        devices = list(enrollment.devices)
        site = ClusterSite(
            cluster=cluster,
            shared_port=shared_port,
            ledger=ledger,
            actors=actors,
            devices=devices,
            private_ports={gid: free_port() for gid in gateway_ids},
            gateway_accounts=gateway_accounts,
        )
        try:
            for i, gid in enumerate(gateway_ids):
                await start_gateway(site, gid, tmp, node=i % len(cluster.nodes))
            yield site
        finally:
            for gid in list(site.gateways):
                await stop_gateway(site, gid)
            # nothing of this site stays connected to the module's cluster
            await eventually(lambda: not _connections(cluster), 10)


def _connections(cluster: RabbitCluster) -> list[Any]:
    try:
        return list(cluster.management("/connections?columns=name,user"))
    except Exception:
        return []
