"""Many simulated devices in one asyncio process: pacing, backoff, live counters, and an observer.

Strategy: every device is a :class:`~firmware_sim.device.SimDevice` (the real device core over the
lean MQTT client, a few KB per connection, no task per device while idle). Work over a fleet is a
set of short coroutines, one per device, started through a :class:`Pacer` so connection ramp-up
stays under the broker's limits (~1,000 connects/s by default, jittered). After a lost connection a
device waits a full-jitter exponential :class:`Backoff`, as the agents do, so a broker restart does
not turn into a reconnect storm; :class:`FleetStats` records every connect per second to show it.
The :class:`Observer` reads the gateway's verified-data stream, the only proof that data was
*accepted* (a device cannot see that itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from device_agent.core import policy, topics
from gateway.mqtt import MqttClient, MqttError
from gateway.ops import parse_counters
from ledger_bridge.enrollment import ProvisionedDevice

from .device import SimDevice

__all__ = [
    "Backoff",
    "FleetStats",
    "Observer",
    "Pacer",
    "Progress",
    "SiteAccess",
    "gather_limited",
    "metrics_reader",
    "parse_metrics",
]


class Pacer:
    """Spaces starts ``1/rate`` apart (with ±``jitter`` of that spacing); shared by a whole fleet."""

    def __init__(self, rate: float, *, jitter: float = 0.5, rng: random.Random | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval * (1 + self._rng.uniform(-self.jitter, self.jitter))
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n)).

    The agents' own rule (``device_agent.core.policy.backoff_delay``) with the agents' reconnect
    defaults (5 s window, 60 s cap), drawn from a seeded ``random.Random`` so a run can be replayed.
    """

    base: float = 5.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return float(policy.backoff_delay(self.base, self.cap, attempt, rng.randbytes))


@dataclass
class FleetStats:
    """Live counters for the progress line, and every connect's time (to show reconnect spreading)."""

    connected: int = 0
    authenticated: int = 0
    failed: int = 0
    messages_sent: int = 0
    connect_errors: int = 0
    connect_times: list[float] = field(default_factory=list)

    def connected_once(self) -> None:
        self.connected += 1
        self.connect_times.append(time.monotonic())

    def peak_connects_per_s(self, since: float = 0.0) -> int:
        """The largest number of connects within one 1-second bucket after ``since``."""
        buckets = Counter(int(t - since) for t in self.connect_times if t >= since)
        return max(buckets.values(), default=0)


class Observer:
    """Reads every verified topic (data the gateways verified and republished), counting per device."""

    def __init__(self) -> None:
        self.per_device: Counter[str] = Counter()
        self.payloads: dict[str, list[bytes]] = {}
        self.keep_payloads: set[str] = set()
        self.client: MqttClient | None = None

    @property
    def total(self) -> int:
        return sum(self.per_device.values())

    async def start(self, host: str, port: int, *, username: str, password: str) -> Observer:
        self._address = (host, port, username, password)
        host, port, username, password = self._address
        self.client = await MqttClient.connect(
            host,
            port,
            client_id=username,
            username=username,
            password=password,
            on_message=self._on_message,
            keepalive=60,
        )
        await self.client.subscribe([(topics.every(topics.VERIFIED), 1)])
        return self

    async def reconnect(self, *, timeout: float = 15.0) -> None:
        """Connect again (after a broker restart), retrying for up to ``timeout`` seconds."""
        host, port, username, password = self._address
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.start(host, port, username=username, password=password)
                return
            except (MqttError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        parsed = topics.parse(topic)
        if parsed is None or parsed[0] != topics.VERIFIED:
            return
        device = parsed[2]
        self.per_device[device] += 1
        if device in self.keep_payloads:
            self.payloads.setdefault(device, []).append(payload)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


FirmwareUpdate = Callable[[list[ProvisionedDevice], bytes], Awaitable[list[tuple[ProvisionedDevice, int]]]]


def ledger_firmware_update(
    ledger: Any, *, maintainer: Any, owner: Any, gateways: list[bytes]
) -> FirmwareUpdate:
    """``SiteAccess.update_firmware`` on a real ledger: the maintainer records, the owner re-seals for
    ``gateways`` (on-chain ids) - ``ledger_bridge.firmware.update_firmware``."""
    from ledger_bridge.firmware import update_firmware

    async def run(
        devices: list[ProvisionedDevice], firmware_hash: bytes
    ) -> list[tuple[ProvisionedDevice, int]]:
        updated, _ = await update_firmware(
            ledger,
            maintainer=maintainer,
            owner=owner,
            devices=devices,
            firmware_hash=firmware_hash,
            gateways=gateways,
        )
        return updated

    return run


@dataclass(kw_only=True)
class SiteAccess:
    """What scenarios may reach: the broker, the gateway's id, identities, and optional powers.

    ``identities`` yields enrolled, active devices; each scenario takes fresh ones (attacks leave
    marks on a device: a quarantine, a lockout, a revocation). ``owner`` (an ActorHandle) lets a
    scenario revoke on the ledger; ``restart_broker`` lets one restart the broker; ``observer``
    sees verified data; ``gateway_metric(name, label)`` reads the gateway's counters;
    ``update_firmware`` takes devices through a firmware update on the ledger.
    """

    host: str
    port: int
    gateway_id: str
    identities: Iterator[ProvisionedDevice]
    ports: tuple[int, ...] = ()  # a cluster's other nodes: devices are spread over (port, *ports)
    # the devices' down/command subscriptions: 0 on a RabbitMQ 3.10 cluster (a transient queue per
    # device instead of a durable, mirrored one: see SimDevice and GATEWAY.md section 4a)
    subscribe_qos: int = 1
    window: int = 100
    initial_counter: int = 0  # the counter identities start from (> 0 when they authenticated before)
    owner: Any = None
    restart_broker: Callable[[], Awaitable[None]] | None = None
    observer: Observer | None = None
    gateway_metric: Callable[[str, str], Awaitable[int | None]] | None = None
    # (identities, new firmware hash) -> [(identity on the new image, its epoch)]: the maintainer records,
    # the owner re-seals (ledger_bridge.firmware.update_firmware)
    update_firmware: FirmwareUpdate | None = None
    stats: FleetStats = field(default_factory=FleetStats)
    pacer: Pacer = field(default_factory=lambda: Pacer(1000.0))
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)

    def take(self, n: int) -> list[ProvisionedDevice]:
        out = []
        for _ in range(n):
            try:
                out.append(next(self.identities))
            except StopIteration:
                raise RuntimeError(f"not enough enrolled identities for {n} more devices") from None
        return out

    def device(self, identity: ProvisionedDevice, **kw: Any) -> SimDevice:
        kw.setdefault("counter", self.initial_counter)
        kw.setdefault("subscribe_qos", self.subscribe_qos)
        ports = (self.port, *self.ports)
        port = ports[identity.device_id[-1] % len(ports)]  # a device keeps its node across reconnects
        return SimDevice(identity, gateway_id=self.gateway_id, host=self.host, port=port, **kw)

    async def connect(self, dev: SimDevice, *, attempts: int = 8, paced: bool = True) -> bool:
        """Connect with pacing and jittered exponential backoff; -> True once connected."""
        for attempt in range(attempts):
            if paced:
                await self.pacer.wait()
            try:
                await dev.connect(timeout=10.0)
            except (MqttError, OSError):
                self.stats.connect_errors += 1
                await asyncio.sleep(self.backoff.delay(attempt, self.rng))
                continue
            self.stats.connected_once()
            return True
        return False

    async def authenticate(self, dev: SimDevice, *, timeout: float = 10.0) -> object:
        result = await dev.authenticate(timeout=timeout)
        if dev.session is not None and type(result).__name__ == "Authenticated":
            self.stats.authenticated += 1
        else:
            self.stats.failed += 1
        return result

    def send(self, dev: SimDevice, stream: str, payload: bytes) -> bool:
        try:
            dev.send_data(stream, payload)
        except MqttError:
            return False
        self.stats.messages_sent += 1
        return True

    async def metric(self, name: str, label: str = "") -> int | None:
        if self.gateway_metric is None:
            return None
        return await self.gateway_metric(name, label)


def parse_metrics(text: str) -> dict[tuple[str, str], int]:
    """Prometheus text from the gateway -> {(name, reason): value} for its ``diams_*_total`` counters."""
    return parse_counters(text)


def metrics_reader(url: str) -> Callable[[str, str], Awaitable[int | None]]:
    """``gateway_metric`` for a gateway in another process: reads its Prometheus ``/metrics``."""

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the site's loopback URL
            return str(resp.read().decode())

    async def metric(name: str, label: str) -> int | None:
        try:
            text = await asyncio.to_thread(fetch)
        except OSError:
            return None
        return parse_metrics(text).get((name, label), 0)

    return metric


async def gather_limited(coros: Iterable[Awaitable[Any]], limit: int = 2000) -> list[Any]:
    """Run awaitables with at most ``limit`` in flight (bounds sockets and memory at ramp-up)."""
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


class Progress:
    """A status line on stderr (rich's ``Live``) refreshed ``hz`` times a second; one plain line per
    5 s when the stream is not a terminal."""

    def __init__(self, stats: FleetStats, *, stream: TextIO | None = None, hz: float = 2.0) -> None:
        self.stats = stats
        self.stream = stream or sys.stderr
        self.interval = 1.0 / hz
        self.label = ""
        self._task: asyncio.Task[None] | None = None
        self.console = Console(file=self.stream, highlight=False)
        self._live: Live | None = None

    def line(self) -> str:
        s = self.stats
        return (
            f"{self.label:<16} connected {s.connected:>6}  authenticated {s.authenticated:>6}  "
            f"failed {s.failed:>4}  msgs {s.messages_sent:>7}"
        )

    async def _run(self) -> None:
        last_plain = 0.0
        while True:
            await asyncio.sleep(self.interval)
            if self._live is not None:
                self._live.update(Text(self.line()), refresh=True)
            elif time.monotonic() - last_plain >= 5.0:
                last_plain = time.monotonic()
                self.console.print(self.line(), markup=False)

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(Text(self.line()), console=self.console, auto_refresh=False, transient=False)
            self._live.start(refresh=True)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            if self._live is not None:
                self._live.update(Text(self.line()), refresh=True)
                self._live.stop()
            else:
                self.console.print(self.line(), markup=False)
