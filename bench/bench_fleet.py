"""Handshakes per second and memory against fleet size: 100 to 10,000 devices, one site, one run.

Setup as ``bench_sim`` (``bench._site.build_site``: Mosquitto with the gateway's enforcer files, anvil,
devices onboarded for ``gw-a``, the gateway daemon in its own process). For each fleet size N in
``BENCH_FLEET_SIZES`` (default 100, 300, 1000, 3000, 10000) a NEW simulator process (spawned, so its
memory is its own) takes N devices never used before and runs ``steady`` with ``seconds=0``: every
device connects (paced at ``BENCH_FLEET_RATE``, default 2,000/s), authenticates and sends one message,
and the observer waits for each message on a verified topic. The sizes use disjoint devices (a device
whose counters started again would be a replay), so the site onboards their sum (14,400 by default).

Figures per size N: ``fleet_<N>_handshakes_per_s`` (authenticated devices over the time from the first
connect to the last verified message), ``fleet_<N>_handshake_p99_ms``, ``fleet_<N>_sim_rss_mb`` (the
simulator's peak RSS with N devices and connections) and ``fleet_<N>_gateway_rss_mb`` (the gateway's
RSS afterwards: it holds the sessions of every size run so far, so it is read against the cumulative
count, ``fleet_<N>_gateway_sessions``). ``bench/report.py`` draws them as ``docs/bench/fleet_sweep.svg``.
A size that fails stops the sweep there and says so (``fleet_largest_ok``).

The sweep starts only once the gateway serves the whole onboarded fleet (its ``devices_servable``
gauge): with 14,400 devices on a loaded machine the first sync may time out and the gateway then
catches up in windows (``ledger_bridge.index.SyncWindow``) while already ready; a size run against a
half-built index would measure refusals (``fleet_index_ready_s`` says how long that took).
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import time
import urllib.request
from pathlib import Path

from bench._gateway_proc import run_gateway
from bench._site import GATEWAY_ID, build_site
from bench.bench_sim import _simulate
from firmware_sim.broker import free_port
from gateway.settings import DefenceSettings, HttpSettings

SIZES = tuple(int(x) for x in os.environ.get("BENCH_FLEET_SIZES", "100,300,1000,3000,10000").split(","))
RATE = float(os.environ.get("BENCH_FLEET_RATE", "2000"))
INDEX_TIMEOUT_S = 600.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _servable(url: str) -> int:
    """The gateway's ``devices_servable`` gauge (0 while its endpoint does not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # the bench's loopback URL
            text = resp.read().decode()
    except OSError:
        return 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "diams_devices_servable":
                return int(sample.value)
    return 0


async def _run() -> dict[str, float]:
    site = await build_site(n_devices=sum(SIZES), n_unknown=0)
    print(f"   site ready ({sum(SIZES)} devices onboarded)", flush=True)
    ctx = multiprocessing.get_context("spawn")
    gw_ready, gw_stop = ctx.Event(), ctx.Event()
    spec = site.gateway_spec(defence=DefenceSettings(), poll_interval=0.2)
    http_port = free_port()
    spec.settings = dataclasses.replace(
        spec.settings,
        broker=dataclasses.replace(spec.settings.broker, accounts=2),
        http=HttpSettings(port=http_port),
    )
    gw = ctx.Process(target=run_gateway, args=(spec, gw_ready, gw_stop), daemon=True)
    gw.start()
    results: dict[str, float] = {}
    offset = sessions = 0
    try:
        if not await asyncio.to_thread(gw_ready.wait, 120):
            raise RuntimeError("the gateway did not become ready")
        t_index = time.monotonic()
        url = f"http://127.0.0.1:{http_port}/metrics"
        while (served := await asyncio.to_thread(_servable, url)) < sum(SIZES):
            if time.monotonic() - t_index > INDEX_TIMEOUT_S:
                raise RuntimeError(
                    f"the gateway serves {served} of {sum(SIZES)} devices "
                    f"{INDEX_TIMEOUT_S:.0f} s after it was ready"
                )
            await asyncio.sleep(0.5)
        results["fleet_index_ready_s"] = time.monotonic() - t_index
        ready_s = results["fleet_index_ready_s"]
        print(f"   gateway serves all {sum(SIZES)} devices ({ready_s:.0f} s after ready)", flush=True)
        await asyncio.sleep(1.5)
        assert gw.pid is not None
        for n in SIZES:
            identities = site.devices[offset : offset + n]
            offset += n
            out = ctx.Queue()
            sim = ctx.Process(
                target=_simulate,
                args=(identities, site.port, site.secrets[GATEWAY_ID], RATE, out),
                daemon=True,
            )
            t0 = time.monotonic()
            sim.start()
            try:
                figures: dict[str, float] = await asyncio.to_thread(out.get, True, 300)
            except Exception as exc:  # the sweep stops where the machine does, and says so
                print(f"   {n} devices: no result ({type(exc).__name__}); the sweep stops here", flush=True)
                sim.kill()
                break
            await asyncio.to_thread(sim.join, 30)
            sessions += int(figures["sim_authenticated"])
            if figures["sim_verified"] < n:
                print(f"   {n} devices: only {figures['sim_verified']:.0f} verified; the sweep stops here")
                break
            hs = figures["sim_authenticated"] / max(figures["sim_seconds"], 1e-9)
            gw_rss = _rss_mb(gw.pid)
            results |= {
                f"fleet_{n}_handshakes_per_s": hs,
                f"fleet_{n}_handshake_p99_ms": figures["sim_handshake_p99_ms"],
                f"fleet_{n}_sim_rss_mb": figures["sim_rss_mb"],
                f"fleet_{n}_gateway_rss_mb": gw_rss,
                f"fleet_{n}_gateway_sessions": float(sessions),
            }
            results["fleet_largest_ok"] = float(n)
            print(
                f"   {n:>6} devices: {hs:,.0f} handshakes/s, sim {figures['sim_rss_mb']:.0f} MB, "
                f"gateway {gw_rss:.0f} MB ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
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
