"""``make demo``: a whole DIAMS site on this machine, a simulated fleet, a few attacks, and a verdict.

    make demo                      # or: python -m firmware_sim.demo
    DEMO_SECONDS=90 make demo      # stop by itself after 90 s (exit 0 when every check held)
    DEMO_DEVICES=50 make demo      # a smaller honest fleet (default 200)
    make demo DEMO_ARGS="--broker rabbitmq-cluster"   # a 3-node RabbitMQ cluster, HTTP enforcement

Strategy: everything a real site has, each in its own process, all under one run directory
``run/demo-<timestamp>/`` (logs, keystores, configs, the chain file, the report):

1. a private Mosquitto with the gateway's password/ACL enforcement (``firmware_sim.broker``);
2. the embedded ledger served over JSON-RPC (``python -m ledger_bridge.node``), since the chain file
   has one owner process and every actor, the gateway and the simulator need it;
3. the actors, each with its own encrypted keystore: the admin deploys the contracts and grants
   roles, the manufacturer registers the fleet, the owner claims, sets a policy, activates and
   authorizes the gateway with sealed keys, the operator registers the gateway;
4. ``diams-gateway run`` as a subprocess from a TOML file (ledger over RPC, enforcement through
   the broker's pid file);
5. the simulator in this process: a steady fleet, then attacks (replay, clone, revocation
   mid-session, firmware mismatch, counter past the window) and a firmware update (image 2.0 recorded,
   keys re-sealed, the old image refused), each checked against the outcome the
   protocol requires, plus the gateway's own counters read from its /metrics endpoint.

Without ``DEMO_SECONDS`` the site stays up after the summary (``site.json`` says how to reach it,
e.g. with ``diams-sim --site``) until Ctrl-C. Everything is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress

from device_agent.private import write_private
from gateway.broker import AuthorizeApplication, BrokerSecret, application_username
from gateway.settings import (
    BrokerSettings,
    EnforcementSettings,
    HttpSettings,
    LedgerSettings,
    ProtocolSettings,
    dump_settings,
)
from ledger_bridge import Ledger, Role, RpcBackend, Signer
from ledger_bridge.enrollment import ProvisionedDevice
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.keystore import DEFAULT_SCRYPT_N, create_keystore

from .broker import MosquittoBroker, free_port
from .fleet import (
    Observer,
    Pacer,
    Progress,
    SiteAccess,
    ledger_firmware_update,
    metrics_reader,
    parse_metrics,
)
from .identities import save_identities
from .rabbitmq import ADMIN, RabbitCluster
from .report import FleetReport
from .scenarios import ScenarioParams, identities_needed, run_scenario
from .site import ETH as _ETH
from .site import (
    Enrollment,
    SitePlan,
    account_name,
    actor_names,
    admit_gateways,
    enforce_on,
    enroll,
    gateway_settings,
)

__all__ = ["main"]

GATEWAY_ID = "gw-demo"
OBSERVER = "observer"  # the application account (app-observer) that reads the verified data
FIRMWARE = hashlib.sha256(b"diams demo firmware 1.0").digest()
POLICY = hashlib.sha256(b"policy: demo sensors").digest()
ATTACKS = ("replay", "clone", "revoked", "firmware_mismatch", "counter_window")
UPDATES = ("firmware_update",)  # the maintainer records image 2.0, the owner re-seals
SPARE_IDENTITIES = 40  # enrolled for later `diams-sim --site` runs
KEYSTORE_SCRYPT_N = DEFAULT_SCRYPT_N  # eth-keyfile's default: the floor ledger_bridge.keystore enforces
ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _write_secret(path: Path, text: str) -> Path:
    write_private(path, text.encode())
    return path


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our loopback URL
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT, env=env
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._out.close()
        return self.proc.returncode

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Demo:
    def __init__(
        self, *, devices: int, attackers: int, steady_seconds: float, run_dir: Path, broker: str = "mosquitto"
    ) -> None:
        self.broker_kind = broker
        self.cluster: RabbitCluster | None = None
        self.devices = devices
        self.attackers = attackers
        self.steady_seconds = steady_seconds
        self.dir = run_dir
        self.broker: MosquittoBroker | None = None
        # who reads the verified data: a read-only application account of its own on Mosquitto, a
        # gateway account on the RabbitMQ cluster (its http enforcer has no application accounts)
        self.observer_username = application_username(OBSERVER)
        self.observer_password = BrokerSecret.generate().reveal()
        self.children: list[Process] = []
        self.console: asyncio.Task[None] | None = None
        self.console_url = ""
        self.report = FleetReport()
        self.gateway_checks: dict[str, bool] = {}

    # ---- the site ----
    def start_broker(self) -> MosquittoBroker:
        broker = MosquittoBroker(self.dir / "broker")
        self.broker = broker
        self.gateway_password = BrokerSecret.generate().reveal()
        # the gateway's own accounts exist before it starts (it rewrites both files once running)
        admit_gateways(
            enforce_on(broker),
            {GATEWAY_ID: self.gateway_password},
            connections=2,
            extra=[AuthorizeApplication(name=OBSERVER, secret=BrokerSecret(self.observer_password))],
        )
        broker.start()
        where = f", files in {broker.directory}" if broker.requested_directory else ""
        say(f"mosquitto on {broker.host}:{broker.port} (pid {broker.pid}), log {broker.log_path}{where}")
        return broker

    def start_cluster(self) -> RabbitCluster:
        """``--broker rabbitmq-cluster``: 3 RabbitMQ nodes asking the gateway's endpoint (mode "http")."""
        self.gateway_password = BrokerSecret.generate().reveal()
        self.observer_username, self.observer_password = f"gateway-{GATEWAY_ID}.1", self.gateway_password
        self.authz_port = free_port()
        cluster = RabbitCluster(nodes=3, auth_url=f"http://127.0.0.1:{self.authz_port}/auth")
        self.cluster = cluster
        say("starting a 3-node RabbitMQ cluster (1-2 minutes on 2 cores)")
        cluster.start()
        say(f"rabbitmq cluster: MQTT on {cluster.mqtt_ports}, management on {cluster.management_urls}")
        return cluster

    def _broker_address(self) -> tuple[str, int]:
        if self.cluster is not None:
            return "127.0.0.1", self.cluster.nodes[0].mqtt_port
        assert self.broker is not None
        return self.broker.host, self.broker.port

    def _alternates(self) -> str:
        """A cluster's other nodes, for the gateway to fail over to."""
        if self.cluster is None:
            return ""
        return ",".join(f"127.0.0.1:{p}" for p in self.cluster.mqtt_ports[1:])

    def _enforcement(self, gw_dir: Path) -> EnforcementSettings:
        if self.cluster is not None:
            management = _write_secret(gw_dir / "management.password", self.cluster.admin_password)
            return EnforcementSettings(
                mode="http",
                http_port=self.authz_port,
                management_urls=",".join(self.cluster.management_urls),
                management_user=ADMIN,
                management_password_file=management,
                gateway_accounts="broker",
            )
        assert self.broker is not None
        return EnforcementSettings(
            mode="mosquitto",
            password_file=self.broker.directory / "passwords",
            acl_file=self.broker.directory / "acl",
            pid_file=self.broker.pid_path,
            file_group=self.broker.file_group,
            broker_log=self.broker.log_path,  # cut-offs confirmed, and the version read, in the broker's log
            applications=f"{OBSERVER}={self._observer_password_file()}",
        )

    def _observer_password_file(self) -> Path:
        return _write_secret(self.dir / "gateway" / "observer.password", self.observer_password)

    async def start_ledger_node(self) -> str:
        ready = self.dir / "ledger" / "node.url"
        ready.parent.mkdir(exist_ok=True)
        port = free_port()
        node = Process(
            "ledger-node",
            [
                sys.executable, "-m", "ledger_bridge.node",
                "--path", str(self.dir / "ledger" / "chain.sqlite"),
                "--port", str(port), "--ready-file", str(ready),
            ],
            self.dir / "ledger" / "node.log",
        )  # fmt: skip
        self.children.append(node)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the ledger node did not start:\n{node.tail()}")
            await asyncio.sleep(0.05)
        url = ready.read_text().strip()
        say(f"embedded ledger node on {url}, chain file {self.dir / 'ledger' / 'chain.sqlite'}")
        return url

    def _plan(self) -> SitePlan:
        n_fleet = identities_needed("steady", self._params()) + sum(
            identities_needed(a, self._params()) for a in (*ATTACKS, *UPDATES)
        )
        return SitePlan(
            gateway_ids=(GATEWAY_ID,),
            devices=n_fleet + SPARE_IDENTITIES,
            publish=("telemetry", "status"),
            policy_id=POLICY,
            firmware_hash=FIRMWARE,
            serial_format="SN{:06d}",
        )

    async def enroll(self, url: str) -> tuple[Enrollment, list[ProvisionedDevice], dict[str, Any]]:
        plan = self._plan()
        keys = self.dir / "keys"
        keys.mkdir(mode=0o700)
        signers, files = {}, {}
        for name in actor_names(plan):
            passphrase = secrets.token_urlsafe(18)
            pass_file = _write_secret(keys / f"{name}.passphrase", passphrase)
            signers[name] = await asyncio.to_thread(
                create_keystore, keys / f"{name}.json", passphrase, label=name, scrypt_n=KEYSTORE_SCRYPT_N
            )
            files[name] = (keys / f"{name}.json", pass_file)
        say(f"actor keystores in {keys}: {', '.join(signers)}")
        ledger = Ledger(backend=RpcBackend(url=url, name="demo-node"))
        await ledger.__aenter__()
        self._ledger = ledger
        gw_dir = self.dir / "gateway"
        gw_dir.mkdir()
        t0 = time.monotonic()
        # a bar per onboarding step on a terminal (rich), one line per finished step otherwise
        bars = RichProgress(
            TextColumn("[demo]   {task.description}"), BarColumn(), MofNCompleteColumn(),
            console=Console(highlight=False), disable=not sys.stdout.isatty(),
        )  # fmt: skip
        steps: dict[str, TaskID] = {}

        def progress(step: str, n: int) -> None:
            if not n:
                return
            if step not in steps:
                steps[step] = bars.add_task(step, total=plan.devices)
            bars.update(steps[step], completed=n)
            if bars.disable and n == plan.devices:
                say(f"  {step}: {n}/{plan.devices}")

        with bars:
            site = await enroll(ledger, plan, key_dir=gw_dir, signers=signers, progress=progress)
        # the firmware_update scenario's maintainer (ledger_bridge.firmware): granted by the admin
        maintainer = Signer.generate(label="maintainer")
        await ledger.fund(maintainer.address, _ETH)
        await site.actors["admin"].grant_role(Role.MAINTAINER, maintainer.address)
        self._maintainer = ledger.actor(maintainer)
        channel = site.channel
        say(f"contracts deployed: registry {channel.registry}, auth log {channel.auth_log}")
        say(
            f"{plan.devices} devices enrolled in {time.monotonic() - t0:.1f} s (manufacturer registered, "
            f"owner claimed, set the policy, activated and sealed keys for {GATEWAY_ID})"
        )
        n_fleet = plan.devices - SPARE_IDENTITIES
        fleet = list(site.devices)
        save_identities(self.dir / "fleet-spare.json", fleet[n_fleet:])
        (self.dir / "channel.json").write_text(
            json.dumps(
                {
                    "registry": channel.registry,
                    "auth_log": channel.auth_log,
                    "deployed_block": channel.deployed_block,
                }
            )
            + "\n"
        )
        return site, fleet[:n_fleet], {"actors": site.actors, "files": files}

    def write_gateway_config(
        self,
        url: str,
        channel: Any,
        files: dict[str, Any],
        *,
        gateway_id: str = GATEWAY_ID,
        broker_password: str | None = None,
        enforcement: EnforcementSettings | None = None,
    ) -> tuple[Path, int]:
        """The demo gateway's TOML (``gateway/gateway.toml``), or another gateway's
        (``gateway/<id>.toml``, with its own ``broker_password`` and ``enforcement``)."""
        host, port = self._broker_address()
        gw_dir = self.dir / "gateway"
        own = gateway_id == GATEWAY_ID
        password_file = _write_secret(
            gw_dir / ("broker.password" if own else f"{gateway_id}.broker.password"),
            self.gateway_password if broker_password is None else broker_password,
        )
        http_port = free_port()
        keystore, pass_file = files[account_name(gateway_id)]
        settings = gateway_settings(
            gateway_id,
            key_dir=gw_dir,
            broker=self.broker,  # None with a cluster: broker_settings below say where
            ledger=LedgerSettings(
                mode="rpc",
                url=url,
                registry=channel.registry,
                auth_log=channel.auth_log,
                deployed_block=channel.deployed_block,
                keystore=keystore,
                passphrase_file=pass_file,
                poll_interval=0.2,
                anchor_interval=20.0,
            ),
            broker_settings=BrokerSettings(
                host=host, port=port, password_file=password_file, accounts=2, alternates=self._alternates()
            ),
            enforcement=self._enforcement(gw_dir) if enforcement is None else enforcement,
            protocol=ProtocolSettings(proof_timeout=3.0),
            http=HttpSettings(port=http_port),
        )
        path = gw_dir / ("gateway.toml" if own else f"{gateway_id}.toml")
        path.write_text("# written by firmware_sim.demo (firmware_sim.site)\n" + dump_settings(settings))
        return path, http_port

    async def start_gateway(self, config: Path, http_port: int, name: str = "gateway") -> Process:
        """``diams-gateway run`` as a child ``name`` (its log ``gateway/<name>.log``), once ready."""
        gw = Process(
            name,
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            self.dir / "gateway" / f"{name}.log",
        )
        self.children.append(gw)
        if name == "gateway":
            self.gateway = gw
        deadline = time.monotonic() + 60
        while True:
            if not gw.alive():
                raise RuntimeError(f"the gateway exited:\n{gw.tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{http_port}/readyz")
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway was not ready within 60 s:\n{gw.tail()}")
            await asyncio.sleep(0.1)
        say(f"diams-gateway run --config {config} (pid {gw.proc.pid}) is ready; metrics on :{http_port}")
        return gw

    async def start_console(self, url: str) -> None:
        """`diams-console` on the demo's channel; each actor signs in with keys/<actor>.json."""
        url_file = self.dir / "console.url"
        console = Process(
            "console",
            [
                sys.executable, "-m", "ledger_bridge.console", "--rpc", url,
                "--channel", str(self.dir / "channel.json"), "--index", str(self.dir / "console.sqlite"),
                "--audit-log", str(self.dir / "gateway" / GATEWAY_ID / "audit.log"),
                "--port", str(free_port()), "--url-file", str(url_file),
            ],
            self.dir / "console.log",
        )
        self.children.append(console)
        deadline = time.monotonic() + 120
        while not url_file.exists():
            if not console.alive() or time.monotonic() > deadline:
                say(f"the console did not start:\n{console.tail()}")
                return
            await asyncio.sleep(0.1)
        self.console_url = url_file.read_text().strip()
        keys = self.dir / "keys"
        say(f"console: {self.console_url} (sign in with {keys}/<actor>.json and its <actor>.passphrase)")

    def _params(self) -> ScenarioParams:
        return ScenarioParams(
            devices=self.devices, attackers=self.attackers, seconds=self.steady_seconds, data_interval=2.0
        )

    # ---- the fleet ----
    async def simulate(self, fleet: list[ProvisionedDevice], actors: dict[str, Any], http_port: int) -> None:
        owner = actors["owner"]
        host, port = self._broker_address()
        metrics_url = f"http://127.0.0.1:{http_port}/metrics"

        observer = await Observer().start(
            host, port, username=self.observer_username, password=self.observer_password
        )
        site = SiteAccess(
            host=host,
            port=port,
            ports=tuple(self.cluster.mqtt_ports[1:]) if self.cluster is not None else (),
            subscribe_qos=0 if self.cluster is not None else 1,
            gateway_id=GATEWAY_ID,
            identities=iter(fleet),
            owner=owner,
            update_firmware=ledger_firmware_update(
                self._ledger,
                maintainer=self._maintainer,
                owner=owner,
                gateways=[onchain_gateway_id(GATEWAY_ID.encode())],
            ),
            observer=observer,
            gateway_metric=metrics_reader(metrics_url),
            pacer=Pacer(500.0),
        )
        t0 = time.monotonic()
        with Progress(site.stats) as progress:
            for name in ("steady", *ATTACKS, *UPDATES):
                progress.label = name
                self.report.scenarios.append(await run_scenario(site, name, self._params()))
        self.report.seconds = time.monotonic() - t0
        await observer.close()
        counters = parse_metrics((await asyncio.to_thread(_http_get, metrics_url))[1])
        self.gateway_counters = {f"{n}{'{' + r + '}' if r else ''}": v for (n, r), v in counters.items()}

    async def run(self, deadline: float | None) -> int:
        if self.broker_kind == "rabbitmq-cluster":
            await asyncio.to_thread(self.start_cluster)
        else:
            self.start_broker()
        url = await self.start_ledger_node()
        site, fleet, extra = await self.enroll(url)
        channel = site.channel
        config, http_port = self.write_gateway_config(url, channel, extra["files"])
        await self.start_gateway(config, http_port)
        self.write_site_file(url, http_port)
        await self.simulate(fleet, extra["actors"], http_port)
        ok = self.summarize()
        # after the checks, so it never competes with them for the CPU; it stays up with the site
        self.console = asyncio.create_task(self.start_console(url))
        until = (deadline - 1.0) if deadline is not None else time.monotonic() + 120
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.console, max(0.1, until - time.monotonic()))
        if deadline is None:
            say("the site stays up: Ctrl-C stops everything (site.json says how to reach it)")
            say(f"console: {self.console_url or 'not up (see console.log)'}")
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return 0 if ok else 1

    def write_site_file(self, url: str, http_port: int) -> None:
        host, port = self._broker_address()
        keys = self.dir / "keys"
        broker: dict[str, Any] = {"host": host, "port": port, "kind": self.broker_kind}
        if self.cluster is not None:
            broker["ports"] = self.cluster.mqtt_ports
        site = {
            "broker": broker,
            "gateway_id": GATEWAY_ID,
            "observer": {
                "username": self.observer_username,
                "password_file": str(self._observer_password_file()),
            },
            "metrics_url": f"http://127.0.0.1:{http_port}/metrics",
            "ledger": {"url": url, "channel_file": str(self.dir / "channel.json")},
            "owner": {
                "keystore": str(keys / "owner.json"),
                "passphrase_file": str(keys / "owner.passphrase"),
            },
            "identities": str(self.dir / "fleet-spare.json"),
        }
        (self.dir / "site.json").write_text(json.dumps(site, indent=2) + "\n")

    def summarize(self) -> bool:
        json_path, svg_path = self.report.write(self.dir)
        print("\n=== DIAMS demo summary ===", flush=True)
        print(self.report.render(), flush=True)
        shown = ("authenticated", "rejected", "clone_detected", "cut_off", "data_verified", "data_dropped")
        counters = ", ".join(
            f"{k} {v}" for k, v in sorted(self.gateway_counters.items()) if k.startswith(shown)
        )
        print(f"  gateway counters: {counters}", flush=True)
        print(f"  report {json_path}, histogram {svg_path}, logs under {self.dir}", flush=True)
        print(f"DEMO {'PASSED' if self.report.ok else 'FAILED'}", flush=True)
        return self.report.ok

    async def shutdown(self) -> None:
        if self.console is not None and not self.console.done():
            self.console.cancel()
        ledger = getattr(self, "_ledger", None)
        if ledger is not None:
            with contextlib.suppress(Exception):
                await ledger.__aexit__(None, None, None)
        for child in reversed(self.children):
            rc = await asyncio.to_thread(child.stop)
            say(f"{child.name} stopped (exit {rc})")
        if self.broker is not None:
            self.broker.cleanup()
            say("mosquitto stopped")
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.cleanup)
            say("rabbitmq cluster stopped")


def _env_number(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


async def _main(broker: str = "mosquitto") -> int:
    seconds = _env_number("DEMO_SECONDS", None)
    devices = int(_env_number("DEMO_DEVICES", 200) or 200)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(os.environ.get("DEMO_RUN_ROOT", ROOT / "run")) / f"demo-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True)
    say(f"run directory {run_dir}")
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    demo = Demo(
        devices=devices,
        attackers=int(_env_number("DEMO_ATTACKERS", 2) or 2),
        steady_seconds=float(_env_number("DEMO_STEADY_SECONDS", 10.0) or 10.0),
        run_dir=run_dir,
        broker=broker,
    )
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    timer = loop.call_at(loop.time() + seconds, task.cancel) if seconds is not None else None
    rc = 1
    try:
        rc = await demo.run(deadline)
    except asyncio.CancelledError:
        if interrupted:
            say("interrupted")
        rc = 0 if demo.report.scenarios and demo.report.ok else 1
        if not demo.report.scenarios:
            say("stopped before the checks ran" + ("" if interrupted else f" (DEMO_SECONDS={seconds})"))
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await demo.shutdown()
    say(f"done in {time.monotonic() - started:.1f} s, exit {rc}")
    return rc


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m firmware_sim.demo", description="a whole DIAMS site")
    parser.add_argument(
        "--broker",
        choices=("mosquitto", "rabbitmq-cluster"),
        default=os.environ.get("DEMO_BROKER", "mosquitto"),
        help="mosquitto (one broker, file enforcement; default) or a 3-node RabbitMQ cluster (HTTP)",
    )
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.broker))


if __name__ == "__main__":
    sys.exit(main())
