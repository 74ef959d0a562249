"""A whole site for the gateway benchmark: anvil, Mosquitto with the enforcer's files, onboarded devices.

Built by ``firmware_sim.site`` like the tests' and the demo's sites, but for processes: the ledger is
an anvil node on loopback (so the gateway process reaches it over JSON-RPC, as in production), and
the gateway itself runs in its own process (``bench._gateway_proc``). Everything started here is
stopped in ``close()``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.broker import MosquittoBroker
from firmware_sim.site import SitePlan, admit_gateways, enforce_on, enroll, gateway_settings
from gateway.broker import AuthorizeGateway, BrokerSecret, Enroll, MosquittoEnforcer
from gateway.settings import DefenceSettings, GatewaySettings, LedgerSettings, ProtocolSettings
from ledger_bridge import Ledger, RpcBackend
from ledger_bridge.anvil import AnvilNode
from ledger_bridge.enrollment import ProvisionedDevice

GATEWAY_ID = "gw-a"
RR_GATEWAY_ID = "rr"  # a broker-only gateway account for the plain request/response responder


@dataclass
class GatewayProcessSpec:
    """Everything the gateway process needs (picklable: it crosses a spawn boundary)."""

    settings: GatewaySettings
    broker_password: str
    broker_pid: int
    password_file: Path
    acl_file: Path
    file_group: str | None
    extra_changes: list[Any]  # broker accounts that are not ledger devices (responder, flooders)
    profile: str = ""
    broker_log: Path | None = None  # cut-offs are confirmed in it (enforcement.broker_log)


@dataclass
class BenchSite:
    tmp: Path
    broker: MosquittoBroker
    anvil: AnvilNode
    ledger: Ledger | None = None
    actors: dict[str, Any] = field(default_factory=dict)
    devices: list[ProvisionedDevice] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    unknown_ids: list[str] = field(default_factory=list)  # broker accounts unknown to the ledger
    requester_ids: list[str] = field(default_factory=list)  # broker-only accounts of the plain requesters
    enroll_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.broker.port

    def extra_changes(self) -> list[Any]:
        changes: list[Any] = [
            AuthorizeGateway(gateway_id=RR_GATEWAY_ID, secret=BrokerSecret(self.secrets["rr"]), connections=1)
        ]
        changes += [Enroll(device_id=d, secret=BrokerSecret(self.secrets["flood"])) for d in self.unknown_ids]
        changes += [Enroll(device_id=d, secret=BrokerSecret(self.secrets["rr"])) for d in self.requester_ids]
        return changes

    def gateway_spec(
        self, *, defence: DefenceSettings, poll_interval: float, profile: str = ""
    ) -> GatewayProcessSpec:
        assert self.ledger is not None
        ch = self.ledger.channel
        settings = gateway_settings(
            GATEWAY_ID,
            key_dir=self.tmp,
            broker=self.broker,
            ledger=LedgerSettings(
                mode="rpc",
                url=self.anvil.url,
                registry=ch.registry,
                auth_log=ch.auth_log,
                deployed_block=ch.deployed_block,
                poll_interval=poll_interval,
                anchor_interval=3600,
            ),
            protocol=ProtocolSettings(proof_timeout=5.0, session_lifetime=600),
            defence=defence,
        )
        return GatewayProcessSpec(
            settings=settings,
            broker_password=self.secrets[GATEWAY_ID],
            broker_pid=self.broker.pid,
            password_file=self.broker.directory / "passwords",
            acl_file=self.broker.directory / "acl",
            file_group=self.broker.file_group,
            extra_changes=self.extra_changes(),
            profile=profile,
            broker_log=self.broker.log_path,
        )

    async def close(self) -> None:
        if self.ledger is not None:
            with contextlib.suppress(Exception):
                await self.ledger.__aexit__(None, None, None)
        self.broker.cleanup()
        self.anvil.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def new_enforcer(
    *, password_file: Path, acl_file: Path, reload: Any, address: tuple[str, int], file_group: str | None
) -> MosquittoEnforcer:
    """The enforcer of the gateway process, on the files ``build_site`` wrote (see ``enforce_on``)."""
    return MosquittoEnforcer(
        password_file=password_file,
        acl_file=acl_file,
        reload=reload,
        broker_address=address,
        rights="patterns",
        file_group=file_group,
    )


async def build_site(
    *, n_devices: int, n_unknown: int, n_requesters: int = 0, progress: Any = None
) -> BenchSite:
    """Start anvil and Mosquitto, deploy, onboard ``n_devices`` for ``gw-a``; times each step."""
    tmp = Path(tempfile.mkdtemp(prefix="diams-bench-gw-"))
    broker = MosquittoBroker()
    anvil = AnvilNode().start()
    site = BenchSite(tmp=tmp, broker=broker, anvil=anvil)
    try:
        site.secrets = {
            GATEWAY_ID: BrokerSecret.generate().reveal(),
            "rr": BrokerSecret.generate().reveal(),
            "flood": BrokerSecret.generate().reveal(),
        }
        site.unknown_ids = [f"f{i:015x}" for i in range(n_unknown)]
        site.requester_ids = [f"e{i:015x}" for i in range(n_requesters)]
        enforcer = enforce_on(broker, extra_config=["max_connections -1"])
        admit_gateways(
            enforcer, {GATEWAY_ID: site.secrets[GATEWAY_ID]}, connections=1, extra=site.extra_changes()
        )
        broker.start()
        ledger = Ledger(backend=RpcBackend(url=anvil.url, name="anvil"))
        await ledger.__aenter__()
        site.ledger = ledger
        marks: dict[str, float] = {}

        def step(what: str, n: int) -> None:
            marks[what.split()[0]] = time.perf_counter()
            if progress is not None and n == n_devices:
                progress(what, n)

        plan = SitePlan(gateway_ids=(GATEWAY_ID,), devices=n_devices, publish=("telemetry",))
        enrolled = await enroll(ledger, plan, key_dir=tmp, progress=step)
        site.actors = dict(enrolled.actors)
        site.devices = list(enrolled.devices)
        started = marks["onboarding"]
        site.enroll_seconds = {
            "register_many": marks["registered"] - started,
            "claim_policy_activate": marks["activated"] - marks["registered"],  # onboardMany when batched
            "authorize_many": marks["authorized"] - marks["activated"],
        }
        return site
    except BaseException:
        await site.close()
        raise
