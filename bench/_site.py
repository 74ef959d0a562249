"""A whole site for the gateway benchmark: anvil, Mosquitto with the enforcer's files, onboarded devices.

Like ``tests/gateway/stack.py`` but built for processes: the ledger is an anvil node on loopback (so
the gateway process reaches it over JSON-RPC, as in production), and the gateway itself runs in its
own process (``bench._gateway_proc``). Everything started here is stopped in ``close()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.broker import MosquittoBroker, free_port
from gateway.broker import AuthorizeGateway, BrokerSecret, Enroll, MosquittoEnforcer, mosquitto_config_lines
from gateway.settings import (
    BrokerSettings,
    DefenceSettings,
    GatewaySettings,
    HttpSettings,
    LedgerSettings,
    ProtocolSettings,
)
from ledger_bridge import Ledger, Role, RpcBackend, Signer
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.sealing import generate_gateway_key

ETH = 10**18
POLICY = hashlib.sha256(b"policy: sensors").digest()
FIRMWARE = hashlib.sha256(b"firmware 1.0").digest()
GATEWAY_ID = "gw-a"
RR_GATEWAY_ID = "rr"  # a broker-only gateway account for the plain request/response responder
ANVIL_DIR = Path(__file__).resolve().parents[1] / "ledger_bridge" / "node_modules" / "@foundry-rs"


def anvil_binary() -> Path | None:
    for candidate in sorted(ANVIL_DIR.glob("anvil-*/bin/anvil")) if ANVIL_DIR.is_dir() else []:
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    return Path(found) if found else None


class Anvil:
    """An anvil node on 127.0.0.1 and a free port (automine: one block per transaction)."""

    def __init__(self) -> None:
        binary = anvil_binary()
        if binary is None:
            raise RuntimeError("anvil not found (npm @foundry-rs/anvil in ledger_bridge/node_modules)")
        self.url = f"http://127.0.0.1:{free_port()}"
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--host",
                "127.0.0.1",
                "--port",
                self.url.rsplit(":", 1)[1],
                "--silent",
                "--gas-limit",
                "30000000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError):
                req = urllib.request.Request(
                    self.url,
                    data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=1):
                    return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("anvil did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


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
    anvil: Anvil
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
        settings = GatewaySettings(
            gateway_id=GATEWAY_ID,
            state_dir=self.tmp / GATEWAY_ID,
            key_file=self.tmp / f"{GATEWAY_ID}.key",
            broker=BrokerSettings(host="127.0.0.1", port=self.broker.port, accounts=1),
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
            http=HttpSettings(port=0),
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
    anvil = Anvil()
    site = BenchSite(tmp=tmp, broker=broker, anvil=anvil)
    try:
        site.secrets = {
            GATEWAY_ID: BrokerSecret.generate().reveal(),
            "rr": BrokerSecret.generate().reveal(),
            "flood": BrokerSecret.generate().reveal(),
        }
        site.unknown_ids = [f"f{i:015x}" for i in range(n_unknown)]
        site.requester_ids = [f"e{i:015x}" for i in range(n_requesters)]
        password_file, acl_file = broker.directory / "passwords", broker.directory / "acl"
        broker.extra_config = [*mosquitto_config_lines(password_file, acl_file), "max_connections -1"]
        enforcer = new_enforcer(
            password_file=password_file,
            acl_file=acl_file,
            reload=broker.reload,
            address=(broker.host, broker.port),
            file_group=broker.file_group,
        )
        enforcer.stage(
            [
                AuthorizeGateway(gateway_id=GATEWAY_ID, secret=BrokerSecret(site.secrets[GATEWAY_ID])),
                *site.extra_changes(),
            ]
        )
        enforcer.write_files()
        broker.start()
        ledger = Ledger(backend=RpcBackend(url=anvil.url, name="anvil"))
        await ledger.__aenter__()
        site.ledger = ledger
        names = ["admin", "manufacturer", "owner", "operator", f"account-{GATEWAY_ID}"]
        signers = {n: Signer.generate(label=n) for n in names}
        for s in signers.values():
            await ledger.fund(s.address, 100 * ETH)
        await ledger.deploy(admin=signers["admin"])
        actors = {n: ledger.actor(s) for n, s in signers.items()}
        site.actors = actors
        await actors["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)
        await actors["admin"].grant_role(Role.OPERATOR, signers["operator"].address)
        await actors["owner"].define_policy(POLICY, publish=["telemetry"], subscribe=["config"])
        pub = generate_gateway_key(tmp / f"{GATEWAY_ID}.key")
        await actors["operator"].register_gateway(
            onchain_gateway_id(GATEWAY_ID.encode()),
            x25519_public_key=pub,
            account=signers[f"account-{GATEWAY_ID}"].address,
        )
        site.devices = [
            ProvisionedDevice.generate(model="diams-sensor", serial=f"SN{i:05d}", firmware_hash=FIRMWARE)
            for i in range(n_devices)
        ]
        marks: dict[str, float] = {}
        started = time.perf_counter()

        def step(what: str, n: int) -> None:
            marks[what.split()[0]] = time.perf_counter()
            if progress is not None and n == n_devices:
                progress(what, n)

        await onboard(
            manufacturer=actors["manufacturer"],
            owner=actors["owner"],
            devices=site.devices,
            gateways=[GatewayPublicKey(gateway_id=GATEWAY_ID.encode(), x25519_public_key=pub)],
            policy_id=POLICY,
            progress=step,
        )
        site.enroll_seconds = {
            "register_many": marks["registered"] - started,
            "claim_policy_activate": marks["activated"] - marks["registered"],  # onboardMany when batched
            "authorize_many": marks["authorized"] - marks["activated"],
        }
        return site
    except BaseException:
        await site.close()
        raise
