"""The gateway daemon end to end: handshake throughput and latency against the plain MQTT ceiling,
revocation cut-off, and legitimate success under a flood. One run, one broker, ~2-3 minutes.

Setup (``bench._site``): a private mosquitto 2.0.21 (``set_tcp_nodelay true``, the password + ACL files
of the gateway's ``MosquittoEnforcer``, ``%u`` patterns), an anvil node on loopback, and
``BENCH_GATEWAY_DEVICES`` (default 10,000) devices onboarded for gateway ``gw-a`` with
``ledger_bridge.enrollment.onboard``, plus 30 broker accounts the ledger does not know (flooders) and
one for a second, broker-only gateway ``rr`` (the plain responder). The gateway
(``gateway.service.Gateway``: ledger over JSON-RPC to anvil, its own enforcer signalling the broker,
counters and audit on disk) runs in its OWN process, as do the responder and the flooder; the load
generator (devices on ``gateway.mqtt.MqttClient``, the client the gateway itself uses) runs in this
process. Every process is stopped in ``finally``.

The machine has 2 cores shared by mosquitto, the gateway, anvil, the load generator and whatever else
runs (CI neighbours): throughputs move by 2x between runs. ``<proc>_cpu_e2e`` / ``_paced`` / ``_flood``
are each process's CPU (fraction of one core) in a window, and ``<proc>_cpu_us_per_handshake`` /
``<proc>_cpu_us_per_rr`` the CPU each one spends per handshake or per plain round trip: those move
much less with the neighbours and say where the cost is.

Bench-only gateway setting: ``defence.device_rate`` = 50/s (burst 100) instead of 2/s (burst 6),
because the saturated run re-authenticates each of 1,000 devices in a tight loop (~3 handshakes/s,
~6 handshake messages/s per device); everything else is the default (``ledger.poll_interval`` 0.2 s,
global rate 20,000 messages/s, ``proof_timeout`` 5 s).

``mqtt_rr_ceiling_per_s`` / ``mqtt_rr_p50_ms``: plain request/response through the same broker, with
the same client library, concurrency and QoS as the e2e run: the responder process does no work
(on gateway ``rr``'s handshake up topics, it echoes each message to the down topic at QoS 1), and 1,000
requesters in this process, each its own connection (1,000 broker-only accounts, so they stay
connected beside the devices), publish a 21-byte message at QoS 1 on their ``up`` topic and await the
echo, in a closed loop.

``e2e_handshakes_per_s``, ``e2e_saturated_p50_ms`` / ``_p99_ms``: 1,000 ``SimDevice``s (the real
device role), each its own connection, each authenticating in a closed loop (HELLO → CHALLENGE → PROOF
→ RESULT, two round trips; the gateway makes each accepted counter durable in SQLite before its
CHALLENGE leaves); latency is HELLO sent → RESULT verified. ``e2e_rejected`` counts handshakes that did
not authenticate.

The ceiling and the e2e load run in ``ROUNDS`` (3) alternating windows of ``ROUND_S`` (3 s, after a
1 s warm-up each): the rates are the medians of the rounds, ``e2e_vs_half_ceiling`` the median of the
per-round ratio e2e / (ceiling / 2) (target ≥ 0.5), so a neighbour's burst weighs on both sides of the
ratio alike; percentiles pool every round trip or handshake of the windows. Both loops keep 1,000
requests outstanding, so their latency is ~1,000 / rate by construction (Little's law): the saturated
p99 cannot meet 50 ms below 20,000 handshakes/s and measures queueing, not the gateway.

``e2e_handshake_p50_ms`` / ``_p99_ms``: the same 1,000 connected devices, open load: each device
authenticates, pauses 0.5-1.5 s (uniform), and again, for ``WINDOW_S`` (``e2e_paced_handshakes_per_s``
is the rate achieved, ~800/s). Targets: e2e ≥ 0.5 x ceiling / 2 and ≥ 2,000/s; p99 ≤ 50 ms.

``flood_legit_success_ratio`` (and ``flood_legit_p50_ms`` / ``_p99_ms``): a flooder process sends
``FLOOD_RATE`` (10,000) bogus messages/s at QoS 0 from raw sockets: well-formed HELLOs with random
fields from the 30 broker accounts the ledger does not know, and random bytes of random length on the
handshake and data topics of 20 enrolled devices that never authenticate. (A device can publish only
on its own topics: the broker's ACL silently drops the rest, so a bogus id must hold a broker account to
reach the gateway at all.) Meanwhile the 1,000 legitimate devices run the open load above; ratio =
handshakes authenticated / handshakes started (5 s timeout each). ``flood_sent_per_s`` is the rate the
flooder achieved.

``revocation_cutoff_ms``: five connected, authenticated devices are revoked one after another (≥ 1.1 s
apart, so no broker reload is recent): time from submitting the owner's ``revoke`` transaction on anvil
to the device's MQTT connection being closed by the broker **and** the gateway's audit log holding its
``cut_off_confirmed`` record (the gateway saw the connection gone in the broker's log,
``enforcement.broker_log``); median (``revocation_cutoff_max_ms`` the worst).
The path: anvil block → gateway index poll (every 0.2 s) → session dropped, ``CutOff`` →
password file rewritten (10,000+ device lines) → SIGHUP → mosquitto drops the socket → the enforcer
proves the reload with a canary login.

``enroll_*``: what onboarding the 10,000 devices cost: ``registerMany``, ``onboardMany`` (claim +
policy + activate) and ``authorizeGatewayMany``, 100 devices per transaction. (With one transaction per
device for claim, setPolicy and activate, as before ``onboardMany``, anvil managed ~85 tx/s here:
~6 minutes for 10,000 devices.)

``BENCH_GATEWAY_ONLY=revocation`` skips the ceiling, e2e and flood windows (the same site, the same
gateway): only ``revocation_cutoff_ms`` / ``_max_ms`` and the ``enroll_*`` figures.

Profiling: ``BENCH_GATEWAY_PROFILE=<file>`` runs the gateway process under cProfile,
``BENCH_LOADGEN_PROFILE=<file>`` the load generator during the saturated window.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import statistics
import time
from typing import Any

from bench._gateway_proc import run_flooder, run_gateway, run_responder
from bench._site import GATEWAY_ID, RR_GATEWAY_ID, BenchSite, build_site
from device_agent.core import events, topics
from firmware_sim.device import SimDevice
from gateway.broker import gateway_username
from gateway.mqtt import MqttClient
from gateway.settings import DefenceSettings

LEGIT = int(os.environ.get("BENCH_GATEWAY_LEGIT", "1000"))
FLOOD_GARBAGE_DEVICES = 20
REVOKED = 5
FLOOD_HELLO_ACCOUNTS = 30
BROKER_DEVICE_LINES = 10_000
N_DEVICES = int(os.environ.get("BENCH_GATEWAY_DEVICES", "10000"))
WINDOW_S = float(os.environ.get("BENCH_GATEWAY_WINDOW_S", "5"))
ROUNDS, ROUND_S = 3, float(os.environ.get("BENCH_GATEWAY_ROUND_S", "3"))
FLOOD_RATE = 10_000.0
PAYLOAD = b"\x11" + b"r" * 20  # HELLO-sized
BENCH_DEFENCE = DefenceSettings(device_rate=50.0, device_burst=100)


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {n: _cpu_seconds(p) for n, p in pids.items()}
        self.t0 = time.perf_counter()

    def shares(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        return {n: (_cpu_seconds(p) - self.start[n]) / elapsed for n, p in self.pids.items()}


async def _gather_in_batches(coros: list[Any], size: int = 100) -> list[Any]:
    out = []
    for i in range(0, len(coros), size):
        out += await asyncio.gather(*coros[i : i + size])
    return out


# -- the ceiling ----------------------------------------------------------------------------------------


class PlainLoad:
    """1,000 plain requesters, connected once (broker-only accounts, so they coexist with the devices)."""

    def __init__(self, site: BenchSite) -> None:
        self.site = site
        self.clients: list[tuple[MqttClient, str]] = []
        self.waiting: dict[bytes, asyncio.Future[None]] = {}

    def _on_message(self, topic: bytes, _payload: bytes) -> None:
        fut = self.waiting.pop(topic, None)
        if fut is not None:
            fut.set_result(None)

    async def connect(self, ids: list[str]) -> None:
        async def one(user: str) -> tuple[MqttClient, str]:
            c = await MqttClient.connect(
                "127.0.0.1",
                self.site.port,
                client_id=user,
                username=user,
                password=self.site.secrets["rr"],
                on_message=self._on_message,
                keepalive=120,
            )
            await c.subscribe([(topics.handshake_down(RR_GATEWAY_ID, user), 1)])
            return c, user

        self.clients = await _gather_in_batches([one(u) for u in ids])

    async def window(
        self, seconds: float, pids: dict[str, int]
    ) -> tuple[float, list[float], dict[str, float]]:
        """Closed loop: 1 s warm-up, ``seconds`` counted. -> (rate, round trips in s, CPU shares)."""
        loop = asyncio.get_running_loop()
        counting = stopping = False
        done, rtts = 0, []

        async def requester(client: MqttClient, user: str) -> None:
            nonlocal done
            up = topics.handshake_up(RR_GATEWAY_ID, user).encode()
            down = topics.handshake_down(RR_GATEWAY_ID, user).encode()
            while not stopping:
                fut = loop.create_future()
                self.waiting[down] = fut
                t0 = time.perf_counter()
                client.publish(up, PAYLOAD, qos=1)
                await asyncio.wait_for(fut, 10)
                if counting:
                    done += 1
                    rtts.append(time.perf_counter() - t0)

        tasks = [asyncio.create_task(requester(c, u)) for c, u in self.clients]
        await asyncio.sleep(1.0)
        meter = CpuMeter(pids)
        counting, t0 = True, time.perf_counter()
        await asyncio.sleep(seconds)
        counting, elapsed = False, time.perf_counter() - t0
        cpu = meter.shares()
        stopping = True
        await asyncio.gather(*tasks)
        return done / elapsed, rtts, cpu

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c, _ in self.clients))


# -- devices --------------------------------------------------------------------------------------------


async def _connect_sims(site: BenchSite, devices: list[Any]) -> list[SimDevice]:
    sims = [SimDevice(d, gateway_id=GATEWAY_ID, host="127.0.0.1", port=site.port) for d in devices]
    await _gather_in_batches([s.connect() for s in sims])
    return sims


async def _e2e(
    sims: list[SimDevice], seconds: float, pids: dict[str, int]
) -> tuple[float, list[float], int, dict[str, float]]:
    """Closed loop: 1 s warm-up, ``seconds`` counted. -> (rate, latencies in s, rejected, CPU shares)."""
    counting = stopping = False
    done, rejected, lat = 0, 0, []

    async def loop(dev: SimDevice) -> None:
        nonlocal done, rejected
        while not stopping:
            t0 = time.perf_counter()
            result = await dev.authenticate(timeout=5.0)
            if counting:
                if isinstance(result, events.Authenticated):
                    done += 1
                    lat.append(time.perf_counter() - t0)
                else:
                    rejected += 1

    tasks = [asyncio.create_task(loop(s)) for s in sims]
    await asyncio.sleep(1.0)
    profile = os.environ.get("BENCH_LOADGEN_PROFILE", "")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    meter = CpuMeter(pids)
    counting, t0 = True, time.perf_counter()
    await asyncio.sleep(seconds)
    counting, elapsed = False, time.perf_counter() - t0
    cpu = meter.shares()
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    stopping = True
    await asyncio.gather(*tasks)
    return done / elapsed, lat, rejected, cpu


async def _ceiling_and_e2e(
    plain: PlainLoad, sims: list[SimDevice], plain_pids: dict[str, int], pids: dict[str, int]
) -> dict[str, float]:
    """``ROUNDS`` alternating windows of the plain load and the e2e load; medians, and the ratio per round
    (so that a neighbour's burst weighs on both sides of a ratio alike)."""
    rr_rates, rtts, hs_rates, lat, ratios = [], [], [], [], []
    rr_cpu: dict[str, list[float]] = {}
    hs_cpu: dict[str, list[float]] = {}
    rejected = 0
    for _ in range(ROUNDS):
        rate, r, cpu = await plain.window(ROUND_S, plain_pids)
        rr_rates.append(rate)
        rtts += r
        for name, share in cpu.items():
            rr_cpu.setdefault(name, []).append(share / rate * 1e6)
        hs, lt, rej, cpu = await _e2e(sims, ROUND_S, pids)
        hs_rates.append(hs)
        lat += lt
        rejected += rej
        for name, share in cpu.items():
            hs_cpu.setdefault(name, []).append(share / max(1e-9, hs) * 1e6)
        ratios.append(hs / (rate / 2))
        print(f"   round: ceiling {rate:,.0f} rr/s, e2e {hs:,.0f} handshakes/s", flush=True)
    rtts.sort()
    lat.sort()
    out = {
        "mqtt_rr_ceiling_per_s": statistics.median(rr_rates),
        "mqtt_rr_p50_ms": _pct(rtts, 0.5),
        "e2e_handshakes_per_s": statistics.median(hs_rates),
        "e2e_saturated_p50_ms": _pct(lat, 0.5),
        "e2e_saturated_p99_ms": _pct(lat, 0.99),
        "e2e_rejected": float(rejected),
        "e2e_vs_half_ceiling": statistics.median(ratios),
    }
    out.update({f"{name}_cpu_us_per_rr": statistics.median(v) for name, v in rr_cpu.items()})
    out.update({f"{name}_cpu_us_per_handshake": statistics.median(v) for name, v in hs_cpu.items()})
    return out


async def _paced(sims: list[SimDevice], seconds: float) -> tuple[int, int, list[float]]:
    """Each device authenticates about once per second (uniform 0.5-1.5 s pauses): an open load of
    ~1,000 handshakes/s from 1,000 devices. -> (started, authenticated, sorted latencies in s)."""
    attempted = completed = 0
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(dev: SimDevice) -> None:
        nonlocal attempted, completed
        await asyncio.sleep(random.uniform(0, 1.0))
        while time.perf_counter() < deadline:
            attempted += 1
            t0 = time.perf_counter()
            if isinstance(await dev.authenticate(timeout=5.0), events.Authenticated):
                completed += 1
                lat.append(time.perf_counter() - t0)
            await asyncio.sleep(random.uniform(0.5, 1.5))

    await asyncio.gather(*(loop(s) for s in sims))
    lat.sort()
    return attempted, completed, lat


def _pct(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(len(sorted_s) * q))] * 1000 if sorted_s else float("nan")


async def _confirmed(audit: Any, device_hex: str, timeout: float) -> None:
    needle = f'"device":"{device_hex}","event":"cut_off_confirmed"'.encode()
    deadline = time.perf_counter() + timeout
    while needle not in audit.read_bytes():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"cut-off of {device_hex} not confirmed within {timeout} s")
        await asyncio.sleep(0.005)


async def _revocations(site: BenchSite, sims: list[SimDevice]) -> list[float]:
    owner = site.actors["owner"]
    audit = site.tmp / GATEWAY_ID / "audit.log"
    out = []
    for dev in sims:
        result = await dev.authenticate(timeout=5.0)
        if not isinstance(result, events.Authenticated):
            raise RuntimeError(f"revocation target did not authenticate: {result}")
        await asyncio.sleep(1.1)
        assert dev.client is not None
        t0 = time.perf_counter()
        await owner.revoke(dev.device_id)
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 10)
        await _confirmed(audit, dev.hex, 10)  # the gateway saw it gone in the broker's log
        out.append((time.perf_counter() - t0) * 1000)
    return out


# -- the run ------------------------------------------------------------------------------------------


def _process(ctx: Any, target: Any, *args: Any) -> Any:
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


async def _wait_event(event: Any, what: str, timeout: float = 60) -> None:
    if not await asyncio.to_thread(event.wait, timeout):
        raise RuntimeError(f"{what} did not become ready within {timeout} s")


async def _run() -> dict[str, float]:
    results: dict[str, float] = {}
    t0 = time.perf_counter()
    n_unknown = max(FLOOD_HELLO_ACCOUNTS, BROKER_DEVICE_LINES - N_DEVICES)
    site = await build_site(n_devices=N_DEVICES, n_unknown=n_unknown, n_requesters=LEGIT)
    enrolled = site.enroll_seconds
    per_device = sum(enrolled.values()) / N_DEVICES
    results.update(
        {
            "enroll_devices": float(N_DEVICES),
            "enroll_devices_per_s": 1 / per_device,
            "enroll_seconds": sum(enrolled.values()),
            "broker_device_lines": float(N_DEVICES + n_unknown + LEGIT),
        }
    )
    print(f"   site ready in {time.perf_counter() - t0:.1f} s ({N_DEVICES} devices onboarded)", flush=True)
    ctx = multiprocessing.get_context("spawn")
    stops: list[Any] = []
    procs: list[Any] = []
    try:
        gw_ready, gw_stop = ctx.Event(), ctx.Event()
        stops.append(gw_stop)
        spec = site.gateway_spec(
            defence=BENCH_DEFENCE, poll_interval=0.2, profile=os.environ.get("BENCH_GATEWAY_PROFILE", "")
        )
        gw = _process(ctx, run_gateway, spec, gw_ready, gw_stop)
        procs.append(gw)
        rr_ready, rr_stop = ctx.Event(), ctx.Event()
        stops.append(rr_stop)
        rr_user = gateway_username(RR_GATEWAY_ID)
        procs.append(
            _process(
                ctx, run_responder, site.port, rr_user, site.secrets["rr"], RR_GATEWAY_ID, rr_ready, rr_stop
            )
        )
        await _wait_event(gw_ready, "the gateway")
        await _wait_event(rr_ready, "the responder")
        await asyncio.sleep(1.5)  # the gateway's enforcer reloads the broker once at start

        if os.environ.get("BENCH_GATEWAY_ONLY", "") == "revocation":
            rr_stop.set()
            results.update(await _revocation_figures(site, site.devices[LEGIT + FLOOD_GARBAGE_DEVICES :]))
            return results
        rr = procs[-1]
        plain = PlainLoad(site)
        await plain.connect(site.requester_ids)
        sims = await _connect_sims(site, site.devices[:LEGIT])
        pids = {"gw": gw.pid, "broker": site.broker.pid, "loadgen": os.getpid()}
        plain_pids = {"responder": rr.pid, "broker": site.broker.pid, "loadgen": os.getpid()}
        results.update(await _ceiling_and_e2e(plain, sims, plain_pids, pids))
        rr_stop.set()
        await plain.close()
        await asyncio.sleep(1.0)
        meter = CpuMeter(pids)
        t0 = time.perf_counter()
        attempted, completed, lat = await _paced(sims, WINDOW_S)
        results["e2e_paced_handshakes_per_s"] = completed / (time.perf_counter() - t0)
        results["e2e_handshake_p50_ms"], results["e2e_handshake_p99_ms"] = _pct(lat, 0.5), _pct(lat, 0.99)
        results.update({f"{name}_cpu_paced": share for name, share in meter.shares().items()})

        fl_ready, fl_stop, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        stops.append(fl_stop)
        garbage = site.devices[LEGIT : LEGIT + FLOOD_GARBAGE_DEVICES]
        accounts = [(u, site.secrets["flood"], "hello") for u in site.unknown_ids[:FLOOD_HELLO_ACCOUNTS]]
        accounts += [(d.device_id.hex(), d.broker_password(0), "garbage") for d in garbage]
        procs.append(
            _process(ctx, run_flooder, site.port, GATEWAY_ID, accounts, FLOOD_RATE, fl_ready, fl_stop, sent)
        )
        await _wait_event(fl_ready, "the flooder")
        await asyncio.sleep(0.5)
        sent0, f0 = sent.value, time.perf_counter()
        meter = CpuMeter(pids)
        attempted, completed, lat = await _paced(sims, WINDOW_S)
        results["flood_sent_per_s"] = (sent.value - sent0) / (time.perf_counter() - f0)
        results.update({f"{name}_cpu_flood": share for name, share in meter.shares().items()})
        fl_stop.set()
        results["flood_legit_attempted"] = float(attempted)
        results["flood_legit_success_ratio"] = completed / max(1, attempted)
        results["flood_legit_p50_ms"], results["flood_legit_p99_ms"] = _pct(lat, 0.5), _pct(lat, 0.99)
        print(f"   flood ratio {results['flood_legit_success_ratio']:.4f}", flush=True)

        results.update(await _revocation_figures(site, site.devices[LEGIT + FLOOD_GARBAGE_DEVICES :]))
        await asyncio.gather(*(s.close() for s in sims))
    finally:
        for ev in stops:
            ev.set()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join(5)
        await site.close()
    return results


async def _revocation_figures(site: Any, spare: list[Any]) -> dict[str, float]:
    from gateway.mqtt import MqttConnectError

    deadline = time.monotonic() + 300  # a loaded machine: the gateway's first sync may come late
    while True:
        try:
            revoked = await _connect_sims(site, spare[:REVOKED])
            break
        except MqttConnectError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(2.0)
    cutoffs = await _revocations(site, revoked)
    return {"revocation_cutoff_ms": statistics.median(cutoffs), "revocation_cutoff_max_ms": max(cutoffs)}


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<44} {value:>14,.3f}")
