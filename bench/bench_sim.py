"""The fleet simulator at scale: 10,000 devices in one process, and a broker restart under 1,000.

Setup (``bench._site.build_site``): a private mosquitto 2.0.11 with the gateway's enforcer files, an
anvil node on loopback, ``BENCH_SIM_DEVICES`` (default 10,000) devices onboarded for ``gw-a`` with
``ledger_bridge.enrollment.onboard`` (registerMany and authorizeGatewayMany batched 100 per tx; claim,
setPolicy and activate one owner transaction each per device: ``sim_enroll_seconds`` says what that
costs; ``onboard`` batches them with ``onboardMany``). The gateway daemon runs in its own process (ledger
over JSON-RPC to anvil, default defence settings, a second broker account for the verified-data
observer). The machine's 2 cores are shared by mosquitto, anvil, the gateway and the simulator.

``sim_devices`` / ``sim_seconds`` / ``sim_rss_mb``: the simulator in its OWN process (spawned, so its
memory is only its own: interpreter, web3 imported with ``ledger_bridge``, 10,000 ``SimDevice``s and
connections) runs the ``steady`` scenario with ``seconds=0``: every device connects (paced at
``BENCH_SIM_RATE``, default 1,000/s, jittered), authenticates, and sends one message; the observer counts
the messages the gateway verified and republished. ``sim_seconds`` is from the first connect to the last
verified message; ``sim_rss_mb`` is the simulator process's peak RSS (``ru_maxrss``). ``sim_verified``
must equal ``sim_devices``. Targets: ≤ 60 s and ≤ 300 MB.

``reconnect_storm_peak_per_s``: 1,000 of those devices (``BENCH_SIM_STORM``) connect and authenticate
again (their counters continue), then the broker is restarted; each device waits a full-jitter
exponential backoff (attempt n: uniform(0, 5 s x 2^n), the agents' policy) before each dial, re-
authenticates and sends one message. The peak is the largest number of connects the *broker* logged
within one second after the restart (``reconnect_storm_client_peak_per_s``: the same seen by the
clients); ``reconnect_storm_spread_s`` is how long the last device took to come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import random
import re
import resource
import time
from collections import Counter
from typing import Any

from bench._gateway_proc import run_gateway
from bench._site import GATEWAY_ID, build_site
from gateway.settings import DefenceSettings

N_DEVICES = int(os.environ.get("BENCH_SIM_DEVICES", "10000"))
STORM = int(os.environ.get("BENCH_SIM_STORM", "1000"))
RATE = float(os.environ.get("BENCH_SIM_RATE", "1000"))


def _simulate(identities: list[Any], port: int, password: str, rate: float, out: Any) -> None:
    """The simulator process: steady with one message per device; reports figures on ``out``."""
    out.put(asyncio.run(_simulate_main(identities, port, password, rate)))


async def _simulate_main(identities: list[Any], port: int, password: str, rate: float) -> dict[str, float]:
    from firmware_sim.fleet import Observer, Pacer, SiteAccess
    from firmware_sim.scenarios import ScenarioParams, run_scenario

    observer = await Observer().start(
        "127.0.0.1", port, username=f"gateway-{GATEWAY_ID}.1", password=password
    )
    site = SiteAccess(
        host="127.0.0.1",
        port=port,
        gateway_id=GATEWAY_ID,
        identities=iter(identities),
        observer=observer,
        pacer=Pacer(rate),
    )
    params = ScenarioParams(devices=len(identities), seconds=0.0, settle=30.0)
    t0 = time.monotonic()
    result = await run_scenario(site, "steady", params)
    # run_scenario waited for the observer to see every message (or settle): the run ends there
    seconds = time.monotonic() - t0
    await observer.close()
    lat = result.to_json()["latency_ms"]
    return {
        "sim_devices": float(len(identities)),
        "sim_seconds": seconds,
        "sim_authenticated": float(result.outcomes["authenticated"]),
        "sim_verified": float(result.messages_verified or 0),
        "sim_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sim_handshake_p50_ms": float(lat.get("p50", 0.0)),
        "sim_handshake_p99_ms": float(lat.get("p99", 0.0)),
    }


_CONNECT_LINE = re.compile(r"^(\S+): New client connected")


def _broker_peak(log_text: str) -> int:
    """Most 'New client connected' lines the broker logged within one (wall-clock) second."""
    buckets: Counter[str] = Counter()
    for line in log_text.splitlines():
        m = _CONNECT_LINE.match(line)
        if m:
            buckets[m.group(1)] += 1
    return max(buckets.values(), default=0)


async def _storm(site: Any, identities: list[Any]) -> dict[str, float]:
    from firmware_sim.fleet import Backoff, Pacer, SiteAccess
    from firmware_sim.scenarios import ScenarioParams, run_scenario

    log_offset = [0]

    async def restart() -> None:
        log_offset[0] = len(site.broker.log_text())  # only what the restarted broker logs counts
        await asyncio.to_thread(site.broker.restart)

    access = SiteAccess(
        host="127.0.0.1",
        port=site.port,
        gateway_id=GATEWAY_ID,
        identities=iter(identities),
        initial_counter=1,  # each authenticated once in the 10,000 run
        restart_broker=restart,
        pacer=Pacer(RATE),
        backoff=Backoff(),  # the agents' policy: a 5 s full-jitter window, doubling, 60 s cap
        rng=random.Random(),
    )
    result = await run_scenario(access, "broker_restart", ScenarioParams(devices=len(identities)))
    return {
        "reconnect_storm_devices": float(len(identities)),
        "reconnect_storm_peak_per_s": float(_broker_peak(site.broker.log_text()[log_offset[0] :])),
        "reconnect_storm_client_peak_per_s": float(result.figures.get("reconnect_peak_per_s", 0)),
        "reconnect_storm_spread_s": float(result.figures.get("reconnect_spread_s", 0.0)),
        "reconnect_storm_reauthenticated": float(result.outcomes["authenticated"]),
    }


async def _run() -> dict[str, float]:
    t0 = time.perf_counter()
    site = await build_site(n_devices=N_DEVICES, n_unknown=0)
    results: dict[str, float] = {
        "sim_enroll_seconds": time.perf_counter() - t0,
        "sim_enroll_owner_tx_seconds": site.enroll_seconds["claim_policy_activate"],
    }
    print(
        f"   site ready in {results['sim_enroll_seconds']:.1f} s ({N_DEVICES} devices onboarded)", flush=True
    )
    ctx = multiprocessing.get_context("spawn")
    gw_ready, gw_stop = ctx.Event(), ctx.Event()
    spec = site.gateway_spec(defence=DefenceSettings(), poll_interval=0.2)
    spec.settings = dataclasses.replace(
        spec.settings, broker=dataclasses.replace(spec.settings.broker, accounts=2)
    )
    gw = ctx.Process(target=run_gateway, args=(spec, gw_ready, gw_stop), daemon=True)
    gw.start()
    try:
        if not await asyncio.to_thread(gw_ready.wait, 120):
            raise RuntimeError("the gateway did not become ready")
        await asyncio.sleep(1.5)  # the gateway's enforcer reloads the broker once at start
        out = ctx.Queue()
        sim = ctx.Process(
            target=_simulate, args=(site.devices, site.port, site.secrets[GATEWAY_ID], RATE, out), daemon=True
        )
        sim.start()
        results.update(await asyncio.to_thread(out.get, True, 600))
        await asyncio.to_thread(sim.join, 30)
        results.update(await _storm(site, site.devices[:STORM]))
    finally:
        gw_stop.set()
        await asyncio.to_thread(gw.join, 20)
        if gw.is_alive():
            gw.kill()
        await site.close()
    return results


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12,.2f}")
