"""``make campaign``: a whole site under faults, load and attacks, ended by invariants from evidence.

    make campaign                          # or: python -m firmware_sim.campaign
    CAMPAIGN_SECONDS=300 make campaign     # the fault phase's length (default 540: done within 15 min)
    CAMPAIGN_DEVICES=50 CAMPAIGN_SEED=7 make campaign
    CAMPAIGN_FAULTS=disk_full,kill_gateway CAMPAIGN_ATTACKS=replay make campaign   # a subset
    CAMPAIGN_DEVICE_BACKOFF=agent make campaign   # the honest devices back off as the agents do by default

Strategy: the site is the demo's (``firmware_sim.demo.Demo``: a private Mosquitto with enforcement, the
embedded ledger served by its own process, ``diams-gateway run`` as a subprocess) with two gateways on
the one broker: ``gw-demo`` manages the broker's files and writes ``gw-demo-b``'s accounts too
(``enforcement.peer_gateways``), ``gw-demo-b`` enforces nothing; every device is authorized for both and
the honest fleet is split between them. ``gw-demo``'s state directory (counters, audit log) is on a small
tmpfs of its own so that the disk can be filled. An honest fleet streams data for the whole run, each
device re-authenticating whenever it must. A seeded schedule alternates faults and attacks:

- faults: ``kill -9`` and restart of each gateway in turn, the broker, the ledger node and the console;
  devices killed in the middle of a handshake; a device killed in the middle of a re-key at transfer
  (``diams-agent rekey``, killed after INIT, after REPLY or after CONFIRM, then the new owner retries:
  the device must end with the owner's new secret, confirmed on chain, and refuse the previous owner);
  stress-ng loading both cores; device clocks jumping; the audit log's file system filled, then freed.
  After each fault the campaign waits for the fleet to come back;
- attacks: the simulator's scenarios (replay, clone, firmware mismatch, counter beyond the window),
  revocation mid-session, a flood of junk on handshake and data topics, brute force on one device's OTP
  with its captured broker password, and (``firmware_sim.campaign_attacks``) the previous owner after a
  transfer, the pre-authentication broker sequences, an authenticated device flooding valid data, and
  fuzzed HTTP requests to the console's API and the gateway's endpoint. Each round of the seeded
  schedule pairs every fault and every attack at least once.

The verdict (``firmware_sim.invariants.check``) rests on evidence, not on the campaign's own logs: the
gateway's audit log and its on-chain anchors (``diams-gateway audit verify --anchors --config``), the
verified topics seen by an application's account, the counters the honest devices sent and the sessions
they completed, and the broker closing revoked devices' connections. Everything lands in
``run/campaign-<timestamp>/``: ``campaign.json`` (evidence summary, injections, verdicts) and
``campaign.md`` (the table printed at the end). Exit 0 only when every invariant held.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.core import events, topics
from device_agent.private import write_private
from gateway.broker import BrokerSecret
from gateway.mqtt import MqttConnectError, MqttError
from gateway.settings import EnforcementSettings
from ledger_bridge.enrollment import ProvisionedDevice

from . import campaign_attacks
from .demo import GATEWAY_ID, ROOT, Demo, Process, _http_get, say
from .device import SimDevice
from .fleet import Observer, Pacer, SiteAccess, gather_limited, metrics_reader, parse_metrics
from .invariants import (
    AttackOutcome,
    Evidence,
    Fault,
    Invariant,
    Revocation,
    check,
    recovery_by_fault,
    recovery_p99,
)
from .scenarios import ScenarioParams, identities_needed, run_scenario

__all__ = ["Campaign", "main"]

FAULTS = (
    "kill_gateway",
    "kill_broker",
    "kill_ledger",
    "cpu_stress",
    "clock_jump",
    "disk_full",
    "kill_mid_handshake",
    "kill_console",
    "kill_mid_rekey",
)
SCENARIO_ATTACKS = ("replay", "clone", "firmware_mismatch", "counter_window")
ATTACKS = (
    *SCENARIO_ATTACKS,
    "revocation",
    "junk_flood",
    "brute_force",
    "previous_owner",
    "preauth_sequences",
    "data_flood",
    "api_fuzz",
)
GATEWAY_B = "gw-demo-b"  # a second gateway on the same broker: enforcement "none", gw-demo manages the files
GATEWAYS = (GATEWAY_ID, GATEWAY_B)
STATE_TMPFS_BYTES = 32 * 1024 * 1024
ANSWER_TIMEOUT_S = 5.0  # the agent's default answer_timeout_s


@dataclass
class Honest:
    """One honest device of the fleet, and what it can testify to."""

    dev: SimDevice
    sent: int = 0
    errors: int = 0
    counters: set[tuple[int, int]] = field(default_factory=set)
    completed: list[tuple[int, int, float]] = field(default_factory=list)
    authenticated_at_end: bool = False


class VerifiedObserver(Observer):
    """An application's view: the time each device's data was seen on a verified topic."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.seen: dict[str, list[float]] = {}
        self._clock = clock

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        super()._on_message(topic, payload)
        levels = topic.decode(errors="replace").split("/")
        for level in levels[3:]:
            if len(level) == 16:
                self.seen.setdefault(level, []).append(self._clock())
                break


class Campaign:
    def __init__(
        self,
        *,
        run_dir: Path,
        devices: int,
        seconds: float,
        seed: int,
        recovery_bound_s: float = 10.0,
        cutoff_bound_s: float = 1.0,
    ) -> None:
        self.dir = run_dir
        self.n_devices = devices
        self.seconds = seconds
        self.seed = seed
        self.rng = random.Random(seed)
        self.recovery_bound_s = recovery_bound_s
        self.cutoff_bound_s = cutoff_bound_s
        self.params = ScenarioParams(devices=0, attackers=2, seconds=5.0, settle=5.0)
        self.demo = Demo(devices=devices, attackers=2, steady_seconds=0.0, run_dir=run_dir)
        self.t0 = time.monotonic()
        self.clock_offset = 0.0
        self.faults: list[Fault] = []
        self.attacks: list[AttackOutcome] = []
        self.revocations: list[Revocation] = []
        self.honest: list[Honest] = []
        self.excluded: set[str] = set()
        self.stop_fleet = asyncio.Event()
        self.state_mount: Path | None = None
        self.ledger_argv: list[str] | None = None
        self.gateways: dict[str, Process] = {}  # gateway id -> its running daemon
        self.gateway_configs: dict[str, tuple[Path, int]] = {}  # gateway id -> (TOML, HTTP port)
        self._kills = 0  # kill_gateway takes the gateways in turn
        self.loops_died: list[str] = []  # honest device loops that ended with an exception (a bug)
        self.backoff = device_backoff(os.environ.get("CAMPAIGN_DEVICE_BACKOFF", "short"))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def device_clock(self) -> float:
        return time.monotonic() + self.clock_offset

    # ---- the site ------------------------------------------------------------------------------------

    def _identities_for_attacks(self) -> int:
        return sum(identities_needed(a, self.params) for a in SCENARIO_ATTACKS) * 3 + 30

    async def build(self) -> tuple[list[ProvisionedDevice], list[ProvisionedDevice], Any]:
        demo = self.demo
        demo.start_broker()
        url = await demo.start_ledger_node()
        node = demo.children[-1]
        self.ledger_argv = list(node.proc.args)  # type: ignore[arg-type]
        # enroll the honest fleet and the identities the attacks consume
        demo._plan = self._plan  # type: ignore[method-assign]
        site, fleet, extra = await demo.enroll(url)
        self.mount_state_dir()
        # two gateways on the one Mosquitto: gw-demo manages its files and writes gw-demo-b's accounts
        # too (enforcement.peer_gateways); gw-demo-b enforces nothing. Every device is authorized for
        # both; the honest fleet is split between them.
        gw_dir = self.dir / "gateway"
        b_password = BrokerSecret.generate().reveal()
        b_file = gw_dir / f"{GATEWAY_B}.peer.password"
        write_private(b_file, b_password.encode())
        enforcement = dataclasses.replace(demo._enforcement(gw_dir), peer_gateways=f"{GATEWAY_B}={b_file}")
        self.gateway_configs[GATEWAY_ID] = demo.write_gateway_config(
            url, site.channel, extra["files"], enforcement=enforcement
        )
        self.gateway_configs[GATEWAY_B] = demo.write_gateway_config(
            url,
            site.channel,
            extra["files"],
            gateway_id=GATEWAY_B,
            broker_password=b_password,
            enforcement=EnforcementSettings(mode="none"),
        )
        self.gateway_config, self.http_port = self.gateway_configs[GATEWAY_ID]
        self.url = url
        for gid in GATEWAYS:  # the managing one first: it writes the other's broker account
            await self.start_gateway(gid)
        await demo.start_console(url)
        self.owner = extra["actors"]["owner"]
        self.enrollment = site
        return fleet[: self.n_devices], fleet[self.n_devices :], site

    def _plan(self) -> Any:
        from .demo import FIRMWARE, POLICY
        from .site import SitePlan

        return SitePlan(
            gateway_ids=GATEWAYS,
            devices=self.n_devices + self._identities_for_attacks() + 40,
            publish=("telemetry", "status"),
            policy_id=POLICY,
            firmware_hash=FIRMWARE,
            serial_format="SN{:06d}",
        )

    def mount_state_dir(self) -> None:
        """The gateway's state directory on a tmpfs of its own: the disk-full fault touches nothing else."""
        state = self.dir / "gateway" / GATEWAY_ID
        state.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            say("not root: the gateway's state stays on the run directory's disk (no disk-full fault)")
            return
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["/bin/mount", "-t", "tmpfs", "-o", f"size={STATE_TMPFS_BYTES},mode=0700", "tmpfs", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            say(f"could not mount a tmpfs for the gateway's state ({out.stderr.strip()}): no disk-full fault")
            return
        self.state_mount = state

    def unmount_state_dir(self) -> None:
        if self.state_mount is None:
            return
        keep = self.dir / "gateway-state"
        shutil.copytree(self.state_mount, keep, dirs_exist_ok=True)
        subprocess.run(["/bin/umount", "-l", str(self.state_mount)], check=False)  # noqa: S603
        self.state_mount = None
        # the evidence stays where the gateway's config says it is
        for item in keep.iterdir():
            target = self.dir / "gateway" / GATEWAY_ID / item.name
            if item.is_file():
                shutil.copy2(item, target)
        say(f"gateway state copied out of its tmpfs to {keep}")

    # ---- the honest fleet ----------------------------------------------------------------------------

    def site_access(self, identities: list[ProvisionedDevice], observer: Observer | None) -> SiteAccess:
        broker = self.demo.broker
        assert broker is not None
        return SiteAccess(
            host=broker.host,
            port=broker.port,
            gateway_id=GATEWAY_ID,
            identities=iter(identities),
            owner=self.owner,
            observer=observer,
            gateway_metric=metrics_reader(f"http://127.0.0.1:{self.http_port}/metrics"),
            pacer=Pacer(300.0),
        )

    async def honest_loop(self, h: Honest) -> None:
        """An honest device as the agents behave (``device_agent.core.policy``): a lost link or a
        refused login and a failed handshake each have their own full-jitter backoff, and a link that
        comes back resets the first. The bases are ``self.backoff``: shorter than the agent's defaults
        unless ``CAMPAIGN_DEVICE_BACKOFF=agent`` (see ``device_backoff``)."""
        dev = h.dev
        dials = handshakes = 0
        while not self.stop_fleet.is_set():
            try:
                if dev.client is None or not dev.client.is_open:
                    await dev.connect(timeout=10)
                    dev.session = None
                    dials = 0
                if self._needs_handshake(dev):
                    result = await dev.authenticate(timeout=ANSWER_TIMEOUT_S)
                    if isinstance(result, events.Authenticated):
                        h.completed.append((dev.epoch, dev.counter, self.now()))
                        handshakes = 0
                    else:
                        await asyncio.sleep(self.backoff.handshake(self.rng, handshakes))
                        handshakes += 1
                    continue
                dev.send_data("telemetry", b'{"t":%d}' % int(self.now() * 1000))
                h.sent += 1
                await asyncio.sleep(1.0 + self.rng.random() * 0.2)
            except (MqttError, OSError, TimeoutError):
                h.errors += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dev.close(), 2)
                dev.client = None
                await asyncio.sleep(self.backoff.reconnect(self.rng, dials))
                dials += 1

    def _needs_handshake(self, dev: SimDevice) -> bool:
        session = dev.session
        if session is None:
            return True
        if getattr(dev, "reauth_requested", False):  # the gateway said it holds no session for us
            return True
        return bool(session.expires <= self.device_clock() + 30)

    # ---- faults ---------------------------------------------------------------------------------------

    async def start_gateway(self, gid: str) -> None:
        config, http_port = self.gateway_configs[gid]
        name = "gateway" if gid == GATEWAY_ID else f"gateway-{gid}"
        self.gateways[gid] = await self.demo.start_gateway(config, http_port, name=name)

    def kill_gateway(self, gid: str) -> None:
        """``kill -9``: no clean shutdown, no last anchor, sockets dropped by the kernel."""
        gw = self.gateways.pop(gid)
        gw.proc.kill()
        gw.stop()
        self.demo.children.remove(gw)

    async def _supervise_gateway(self) -> None:
        """What systemd's Restart= does: a gateway that died is started again."""
        for gid in GATEWAYS:
            gw = self.gateways[gid]
            if not gw.alive():
                say(f"gateway {gid} exited (code {gw.proc.returncode}); restarting it as systemd would")
                self.demo.children.remove(gw)
                await self.start_gateway(gid)

    async def fault(self, kind: str) -> Fault:
        started = self.now()
        note = ""
        demo = self.demo
        if kind == "kill_gateway":  # each gateway in turn: the one managing the broker's files, the other
            gid = GATEWAYS[self._kills % len(GATEWAYS)]
            self._kills += 1
            self.kill_gateway(gid)
            down = self.rng.uniform(1, 4)
            await asyncio.sleep(down)
            await self.start_gateway(gid)
            note = f"{gid} down {down:.1f} s ({'manages the broker files' if gid == GATEWAY_ID else 'peer'})"
        elif kind == "kill_broker":
            assert demo.broker is not None
            demo.broker.kill()
            await asyncio.sleep(self.rng.uniform(1, 4))
            demo.broker.start()
            await self.observer.reconnect(timeout=30)
        elif kind == "kill_ledger":
            node = next(c for c in demo.children if c.name == "ledger-node")
            node.proc.kill()
            node.stop()
            demo.children.remove(node)
            await asyncio.sleep(self.rng.uniform(2, 6))
            assert self.ledger_argv is not None
            ready = self.dir / "ledger" / "node.url"
            ready.unlink(missing_ok=True)
            demo.children.insert(
                0, Process("ledger-node", self.ledger_argv, self.dir / "ledger" / "node.log")
            )
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            note = "node back" if ready.exists() else "node did not come back"
        elif kind == "cpu_stress":
            seconds = self.rng.randint(15, 25)
            proc = await asyncio.create_subprocess_exec(
                "stress-ng",
                "--cpu",
                str(os.cpu_count() or 2),
                "--timeout",
                f"{seconds}s",
                "--quiet",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
            note = f"{seconds} s on {os.cpu_count()} cores"
        elif kind == "clock_jump":
            jump = self.rng.choice((3600.0, -3600.0, 86400.0))
            self.clock_offset += jump
            note = f"device clocks {jump:+.0f} s"
            await asyncio.sleep(2)
        elif kind == "disk_full":
            if self.state_mount is None:
                note = "not injected: no tmpfs for the gateway's state"
            else:
                filler = self.state_mount / "filler"
                with contextlib.suppress(OSError), open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 20))
                hold = self.rng.uniform(5, 10)
                await asyncio.sleep(hold)
                filler.unlink(missing_ok=True)
                note = f"audit file system full for {hold:.0f} s"
        elif kind == "kill_console":
            console = next((c for c in demo.children if c.name == "console"), None)
            if console is None:
                note = "not injected: no console running"
            else:
                console.proc.kill()
                console.stop()
                demo.children.remove(console)
                (self.dir / "console.url").unlink(missing_ok=True)
                await asyncio.sleep(self.rng.uniform(1, 3))
                await demo.start_console(self.url)
                status = await asyncio.to_thread(_http_status, demo.console_url.rstrip("/") + "/login")
                note = f"console back, /login {status}" if status else "console did NOT come back"
        elif kind == "kill_mid_rekey":
            from .demo import POLICY

            outcome = await campaign_attacks.mid_rekey(
                self.rng,
                ledger=self.demo._ledger,
                manufacturer=self.enrollment.actors["manufacturer"],
                owner=self.owner,
                gateway=self.enrollment.gateway_keys[GATEWAY_ID],
                policy_id=POLICY,
                work=self.dir / "rekey",
            )
            self.attacks.append(dataclasses.replace(outcome, started=started))
            note = f"{outcome.detail.split(' (')[0]}: {'held' if outcome.held else 'BROKEN'} (see mid_rekey)"
        elif kind == "kill_mid_handshake":
            victims = self.rng.sample(self.honest, k=max(1, len(self.honest) // 10))
            for h in victims:
                h.dev.session = None  # makes it start a handshake now
            await asyncio.sleep(0.005)
            for h in victims:
                if h.dev.client is not None:
                    h.dev.client.abort()
            note = f"{len(victims)} devices cut mid-handshake"
        else:
            raise ValueError(kind)
        await self._supervise_gateway()
        return Fault(kind=kind, started=started, ended=self.now(), note=note)

    # ---- attacks --------------------------------------------------------------------------------------

    async def attack(self, name: str, site: SiteAccess) -> AttackOutcome:
        started = self.now()
        outcome = await self._attack(name, site)
        return dataclasses.replace(outcome, started=started)

    async def _attack(self, name: str, site: SiteAccess) -> AttackOutcome:
        if name in SCENARIO_ATTACKS:
            result = await run_scenario(site, name, self.params)
            failed = [c for c, held in result.checks.items() if not held]
            return AttackOutcome(name=name, held=not failed, detail="; ".join(failed) or "every check held")
        if name == "revocation":
            return await self._revocation(site)
        if name == "junk_flood":
            return await self._junk_flood(site)
        if name == "brute_force":
            return await self._brute_force(site)
        if name == "previous_owner":
            from .demo import POLICY

            return await campaign_attacks.previous_owner(
                site,
                ledger=self.demo._ledger,
                owner=self.owner,
                policy_id=POLICY,
                gateway_id=_onchain_gateway_id(),
            )
        if name == "preauth_sequences":
            broker = self.demo.broker
            assert broker is not None
            return await campaign_attacks.preauth_sequences(
                host=broker.host,
                port=broker.port,
                broker=broker,
                gateway_client_id=f"gateway-{GATEWAY_ID}",
                device_ids=[h.dev.hex for h in self.honest[:2]],
                after=self._fleet_served,
            )
        if name == "data_flood":
            from gateway.settings import DefenceSettings

            d = DefenceSettings()
            return await campaign_attacks.data_flood(
                site,
                seconds=5.0,
                rate=d.data_rate,
                burst=d.data_burst,
                seen=lambda hex_: len(self.observer.seen.get(hex_, ())),
                ready=self._gateway_answers,
            )
        if name == "api_fuzz":
            return await campaign_attacks.api_fuzz(
                self.rng,
                console_url=self.demo.console_url,
                keys=self.dir / "keys",
                gateway_port=self.http_port,
            )
        raise ValueError(name)

    async def _gateway_answers(self) -> bool:
        with contextlib.suppress(OSError):
            status, _ = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{self.http_port}/readyz")
            return bool(status == 200)
        return False

    async def _fleet_served(self) -> tuple[bool, str]:
        """Every honest device's data verified again after now (the site still serves the fleet)."""
        since = self.now()
        await self._wait_all_verified(since=since, timeout=self.recovery_bound_s * 2)
        missing = [
            h for h in self.honest if not any(t >= since for t in self.observer.seen.get(h.dev.hex, ()))
        ]
        served = len(self.honest) - len(missing)
        return not missing, f"{served} of {len(self.honest)} honest devices served after"

    async def _revocation(self, site: SiteAccess) -> AttackOutcome:
        devs = [site.device(i) for i in site.take(2)]
        ok = 0
        for dev in devs:
            if not await site.connect(dev) or not isinstance(
                await site.authenticate(dev), events.Authenticated
            ):
                continue
            assert dev.client is not None
            t_revoke = self.now()
            await self.owner.revoke(dev.device_id)
            cut_at: float | None = None
            try:
                await asyncio.wait_for(asyncio.shield(dev.client.closed), 15)
                cut_at = self.now()
            except TimeoutError:
                pass
            refused = False
            try:
                await dev.connect(timeout=5)
            except (MqttConnectError, MqttError, OSError):
                refused = True
            else:
                await dev.close()
            self.revocations.append(
                Revocation(device=dev.hex, revoked_at=t_revoke, cut_off_at=cut_at, refused_after=refused)
            )
            ok += 1
        return AttackOutcome(
            name="revocation",
            held=ok == len(devs),
            detail=f"{ok} of {len(devs)} devices authenticated, revoked and checked",
        )

    async def _junk_flood(self, site: SiteAccess) -> AttackOutcome:
        """An enrolled device's account sends junk of every size on its own topics for 5 s."""
        (identity,) = site.take(1)
        dev = site.device(identity)
        if not await site.connect(dev):
            return AttackOutcome(name="junk_flood", held=False, detail="could not connect")
        assert dev.client is not None
        sent = 0
        deadline = time.monotonic() + 5
        targets = [dev.up, topics.data(GATEWAY_ID, dev.hex, "telemetry")]
        while time.monotonic() < deadline and dev.client.is_open:
            for _ in range(200):
                dev.client.publish(self.rng.choice(targets), os.urandom(self.rng.randint(0, 300)), qos=0)
                sent += 1
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await dev.close()
        status, _ = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{self.http_port}/readyz")
        return AttackOutcome(
            name="junk_flood",
            held=status == 200 and self.gateways[GATEWAY_ID].alive(),
            detail=f"{sent} junk messages; gateway ready {status == 200}",
        )

    async def _brute_force(self, site: SiteAccess) -> AttackOutcome:
        """Random OTPs for one device, from its own (captured) broker account: no session, ever."""
        (identity,) = site.take(1)
        dev = site.device(identity)
        if not await site.connect(dev):
            return AttackOutcome(name="brute_force", held=False, detail="could not connect")
        wins = 0
        tries = 0
        wrong = SimDevice(
            identity, gateway_id=GATEWAY_ID, host=dev.host, port=dev.port, firmware_hash=os.urandom(32)
        )  # keys from a guess: every OTP is random to the gateway
        wrong.client = dev.client
        assert wrong.client is not None
        wrong.client.on_message = wrong._on_message
        for _ in range(25):
            tries += 1
            try:
                result = await wrong.authenticate(timeout=1.5)
            except (MqttError, OSError):
                break
            wins += isinstance(result, events.Authenticated)
        with contextlib.suppress(Exception):
            await dev.close()
        return AttackOutcome(name="brute_force", held=wins == 0, detail=f"{tries} guesses, {wins} sessions")

    # ---- the run --------------------------------------------------------------------------------------

    async def run(self) -> int:
        fleet, spare, _ = await self.build()
        broker = self.demo.broker
        assert broker is not None
        observer = VerifiedObserver(self.now)
        await observer.start(
            broker.host,
            broker.port,
            username=self.demo.observer_username,
            password=self.demo.observer_password,
        )
        self.observer = observer
        site = self.site_access(spare, observer)
        self.honest = [
            Honest(
                dev=SimDevice(
                    identity,
                    gateway_id=GATEWAYS[n % len(GATEWAYS)],  # half the fleet on each gateway
                    host=broker.host,
                    port=broker.port,
                    clock=self.device_clock,
                )
            )
            for n, identity in enumerate(fleet)
        ]
        tasks = [asyncio.create_task(self.honest_loop(h)) for h in self.honest]
        say(f"{len(self.honest)} honest devices streaming; waiting for each one's data to verify")
        await self._wait_all_verified(since=0.0, timeout=120)
        schedule = self._schedule()
        deadline = self.now() + self.seconds
        for kind, attack in schedule:
            if self.now() > deadline:
                break
            f = await self.fault(kind)
            self.faults.append(f)
            say(f"fault {kind} ({f.note or 'done'}) at {f.started:.0f}-{f.ended:.0f} s")
            await self._wait_all_verified(since=f.ended, timeout=self.recovery_bound_s * 3)
            outcome = await self.attack(attack, site)
            self.attacks.append(outcome)
            say(f"attack {attack}: {'held' if outcome.held else 'BROKEN'} ({outcome.detail})")
            await self._supervise_gateway()
        if not self.revocations and "revocation" in self._allowed_attacks():
            outcome = await self.attack("revocation", site)  # the cut-off bound needs its evidence
            self.attacks.append(outcome)
            say(f"attack revocation: {'held' if outcome.held else 'BROKEN'} ({outcome.detail})")
        self.stop_fleet.set()
        for h, ended in zip(self.honest, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(ended, BaseException):  # a bug in the campaign itself: say so, loudly
                say(f"honest device loop of {h.dev.hex} died: {type(ended).__name__}: {ended!r}")
                self.loops_died.append(f"{h.dev.hex}: {type(ended).__name__}")
        self.gateway_metrics = {}
        for gid in GATEWAYS:
            _, text = await asyncio.to_thread(
                _http_get, f"http://127.0.0.1:{self.gateway_configs[gid][1]}/metrics"
            )
            self.gateway_metrics[gid] = {
                f"{n}{{{r}}}" if r else n: v for (n, r), v in parse_metrics(text).items()
            }
        await self._final_round()
        return await self.verdict()

    def _schedule(self) -> list[tuple[str, str]]:
        faults = [f for f in os.environ.get("CAMPAIGN_FAULTS", "").split(",") if f] or list(FAULTS)
        attacks = self._allowed_attacks()
        unknown = sorted(set(faults) - set(FAULTS)) + sorted(set(attacks) - set(ATTACKS))
        if unknown:
            raise ValueError(f"unknown fault or attack {unknown}: faults {FAULTS}, attacks {ATTACKS}")
        return schedule(self.rng, faults, attacks)

    def _allowed_attacks(self) -> list[str]:
        return [a for a in os.environ.get("CAMPAIGN_ATTACKS", "").split(",") if a] or list(ATTACKS)

    async def _wait_all_verified(self, *, since: float, timeout: float) -> None:
        deadline = self.now() + timeout
        missing = self.honest
        while self.now() < deadline:
            missing = [
                h for h in self.honest if not any(t >= since for t in self.observer.seen.get(h.dev.hex, ()))
            ]
            if not missing:
                return
            await asyncio.sleep(0.25)
        stuck = ", ".join(
            f"{h.dev.hex} (sessions {len(h.completed)}, errors {h.errors}, rejected {h.dev.stats.rejected})"
            for h in missing[:3]
        )
        say(f"  {len(missing)} devices without verified data {timeout:.0f} s after {since:.0f} s: {stuck}")

    async def _final_round(self) -> None:
        async def one(h: Honest) -> None:
            dev = h.dev
            for _ in range(5):
                try:
                    if dev.client is None or not dev.client.is_open:
                        await dev.connect(timeout=10)
                    result = await dev.authenticate(timeout=5)
                except (MqttError, OSError):
                    dev.client = None
                    await asyncio.sleep(1)
                    continue
                except Exception as exc:  # a bug in the campaign's device: this device counts as out
                    say(f"final round: {dev.hex}: {type(exc).__name__}: {exc}")
                    break
                if isinstance(result, events.Authenticated):
                    h.completed.append((dev.epoch, dev.counter, self.now()))
                    h.authenticated_at_end = True
                    break
                await asyncio.sleep(1)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dev.close(), 2)

        await gather_limited([one(h) for h in self.honest], limit=200)

    async def _audit_evidence(self, gid: str) -> tuple[list[dict[str, Any]], tuple[bool, str]]:
        # stop the gateway cleanly: it syncs and anchors what it holds (systemd's ExecStop does the same)
        gw = self.gateways.pop(gid)
        rc = await asyncio.to_thread(gw.stop, 30.0)
        self.demo.children.remove(gw)
        if gid == GATEWAY_ID:
            self.unmount_state_dir()
        audit_path = self.dir / "gateway" / gid / "audit.log"
        records = []
        if audit_path.exists():
            for line in audit_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "audit",
                "verify",
                str(audit_path),
                "--anchors",
                "--config",
                str(self.gateway_configs[gid][0]),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        text = f"{gid} exit {rc}\n{out.stdout}{out.stderr}"
        return records, (out.returncode == 0, text)

    async def verdict(self) -> int:
        audit, verified = {}, {}
        for gid in GATEWAYS:
            audit[gid], verified[gid] = await self._audit_evidence(gid)
        evidence = Evidence(
            honest_counters={h.dev.hex: set(h.dev.hellos) for h in self.honest},
            completed={h.dev.hex: h.completed for h in self.honest},
            audit=audit,
            audit_verified=verified,
            verified_data=self.observer.seen,
            faults=self.faults,
            revocations=self.revocations,
            attacks=self.attacks,
            final_auth={h.dev.hex: h.authenticated_at_end for h in self.honest},
            excluded=frozenset(self.excluded),
        )
        verdicts = check(evidence, recovery_bound_s=self.recovery_bound_s, cutoff_bound_s=self.cutoff_bound_s)
        broken = sum(not v.held for v in verdicts)
        p99 = recovery_p99(evidence)
        self.recovery = [
            {
                "fault": f.kind,
                "ended": round(f.ended, 1),
                "p50_s": _quantile(times, 0.5),
                "p99_s": _quantile(times, 0.99),
                "max_s": max(times, default=0.0),
            }
            for f, times in recovery_by_fault(evidence)
        ]
        self.write(verdicts, broken, p99, "\n".join(out for _, out in verified.values()))
        return 0 if broken == 0 else 1

    def write(self, verdicts: list[Invariant], broken: int, p99: float, audit_output: str) -> None:
        lines = [
            "# DIAMS campaign",
            "",
            f"seed {self.seed}, {len(self.honest)} honest devices on {len(GATEWAYS)} gateways "
            f"({', '.join(GATEWAYS)}: one broker, {GATEWAY_ID} manages its files), {self.now():.0f} s; "
            f"device backoff {self.backoff.name} (reconnect base {self.backoff.reconnect_base:g} s, "
            f"handshake base {self.backoff.handshake_base:g} s, cap {self.backoff.cap:g} s)",
            "",
            "## Injected",
            "",
            "| at (s) | what | note |",
            "|---|---|---|",
        ]
        events_ = sorted(
            [(f.started, f"fault: {f.kind}", f.note) for f in self.faults]
            + [(a.started, f"attack: {a.name}", a.detail) for a in self.attacks]
        )
        lines += [f"| {t:.0f} | {what} | {note} |" for t, what, note in events_ if t] + [
            f"| — | {what} | {note} |" for t, what, note in events_ if not t
        ]
        lines += ["", "## Invariants", "", "| invariant | held | evidence |", "|---|---|---|"]
        lines += [f"| {v.name} | {'yes' if v.held else '**NO**'} | {v.detail} |" for v in verdicts]
        lines += [
            "",
            f"campaign_invariants_broken = {broken}",
            f"campaign_recovery_p99_s = {'inf' if math.isinf(p99) else f'{p99:.2f}'}",
            "",
        ]
        text = "\n".join(lines)
        (self.dir / "campaign.md").write_text(text)
        (self.dir / "audit-verify.txt").write_text(audit_output)
        (self.dir / "campaign.json").write_text(
            json.dumps(
                {
                    "seed": self.seed,
                    "devices": len(self.honest),
                    "faults": [f.__dict__ for f in self.faults],
                    "attacks": [a.__dict__ for a in self.attacks],
                    "revocations": [r.__dict__ for r in self.revocations],
                    "invariants": [v.__dict__ for v in verdicts],
                    "honest": {
                        h.dev.hex: {
                            "sent": h.sent,
                            "errors": h.errors,
                            "sessions": len(h.completed),
                            "verified": len(self.observer.seen.get(h.dev.hex, ())),
                        }
                        for h in self.honest
                    },
                    "gateways": list(GATEWAYS),
                    "device_backoff": dataclasses.asdict(self.backoff),
                    "gateway_metrics": getattr(self, "gateway_metrics", {}),
                    "honest_loops_died": self.loops_died,
                    "recovery_by_fault": getattr(self, "recovery", []),  # seconds, over the honest fleet
                    "campaign_invariants_broken": broken,
                    "campaign_recovery_p99_s": None if math.isinf(p99) else p99,
                },
                indent=2,
            )
            + "\n"
        )
        print(text, flush=True)

    async def shutdown(self) -> None:
        self.stop_fleet.set()
        with contextlib.suppress(Exception):
            await self.observer.close()
        await self.demo.shutdown()
        self.unmount_state_dir()


@dataclass(frozen=True)
class DeviceBackoff:
    """Full-jitter backoffs of the honest devices: U(0, min(cap, base * 2^n))."""

    name: str
    handshake_base: float
    reconnect_base: float
    cap: float

    def handshake(self, rng: random.Random, n: int) -> float:
        return rng.uniform(0, min(self.cap, self.handshake_base * 2**n))

    def reconnect(self, rng: random.Random, n: int) -> float:
        return rng.uniform(0, min(self.cap, self.reconnect_base * 2**n))


def device_backoff(name: str) -> DeviceBackoff:
    """``short`` (default): 0.5 s bases, 8 s cap, for a 100-device fleet; ``agent``: the agents' own
    defaults (``device_agent.core.policy.AgentPolicy``: reconnect 5 s, handshake 0.5 s, cap 60 s), which
    are sized for 10,000 devices dialling one broker."""
    if name == "short":
        return DeviceBackoff("short", 0.5, 0.5, 8.0)
    if name == "agent":
        import inspect

        from device_agent.core.policy import AgentPolicy

        p = inspect.signature(AgentPolicy).parameters
        return DeviceBackoff(
            "agent", p["backoff_base"].default, p["reconnect_base"].default, p["backoff_cap"].default
        )
    raise ValueError(f"CAMPAIGN_DEVICE_BACKOFF must be 'short' or 'agent', got {name!r}")


def schedule(
    rng: random.Random, faults: list[str], attacks: list[str], rounds: int = 4
) -> list[tuple[str, str]]:
    """(fault, attack) pairs: each round shuffles both and pairs every fault and every attack at least
    once (the shorter list is cycled), so a short campaign still runs each kind early."""
    out: list[tuple[str, str]] = []
    for _ in range(rounds):
        f, a = list(faults), list(attacks)
        rng.shuffle(f)
        rng.shuffle(a)
        n = max(len(f), len(a))
        out += [(f[i % len(f)], a[i % len(a)]) for i in range(n)]
    return out


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _onchain_gateway_id() -> bytes:
    from ledger_bridge.index import onchain_gateway_id

    return bytes(onchain_gateway_id(GATEWAY_ID.encode()))


def _http_status(url: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return _http_get(url, timeout=10)[0]
    return None


async def _main() -> int:
    seconds = float(os.environ.get("CAMPAIGN_SECONDS", "540"))
    devices = int(os.environ.get("CAMPAIGN_DEVICES", "100"))
    seed = int(os.environ.get("CAMPAIGN_SEED", str(random.randrange(1 << 30))))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(os.environ.get("CAMPAIGN_RUN_ROOT", ROOT / "run")) / f"campaign-{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True)
    say(f"campaign: run directory {run_dir}, seed {seed}, {devices} devices, {seconds:.0f} s of faults")
    campaign = Campaign(run_dir=run_dir, devices=devices, seconds=seconds, seed=seed)
    rc = 1
    try:
        rc = await asyncio.wait_for(campaign.run(), seconds + 360)
    except Exception as exc:
        say(f"campaign failed: {type(exc).__name__}: {exc}")
    finally:
        await campaign.shutdown()
    say(f"campaign {'PASSED' if rc == 0 else 'FAILED'} (exit {rc}); evidence in {run_dir}")
    return rc


def main() -> int:
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
