"""``victim_handshake_p99_ms_under_data_flood``: one authenticated device sends valid DATA as fast as it
can while the others re-authenticate; the 99th percentile of their handshake latency (target ≤ 50 ms).

Setup: ``firmware_sim.inproc.site`` (private mosquitto with enforcement, in-process EVM, the gateway
daemon in this process, default defences: ``defence.data_rate`` 50/s, burst 200, a session ended after
1,000 refused messages) with ``BENCH_FLOOD_VICTIMS`` (default 200; the issue's figure is for 1,000)
victims, each a ``SimDevice`` on its own connection, re-authenticating in a closed loop with a 0.2 s
pause, for ``WINDOW_S`` seconds while the flooder publishes sealed DATA at QoS 0 in a tight loop
(re-authenticating when the gateway ends its session). Everything runs in one process on a shared
2-core machine: the flooder and the victims compete with the gateway for the CPU.
``victim_handshake_p50_ms_under_data_flood`` and ``..._no_flood`` (the same load without the flooder)
put it in context; ``flood_data_sent`` / ``flood_data_verified`` show what the data rate limit let
through (each verified message cost a MAC, the rest a dict look-up).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from device_agent.core import events, topics
from firmware_sim.device import SimDevice
from firmware_sim.inproc import site
from gateway.settings import DefenceSettings

VICTIMS = int(os.environ.get("BENCH_FLOOD_VICTIMS", "200"))
WINDOW_S = float(os.environ.get("BENCH_FLOOD_WINDOW_S", "8"))
BENCH_DEFENCE = DefenceSettings(device_rate=50.0, device_burst=100)  # victims re-authenticate often


async def _victim(dev: SimDevice, latencies: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        result = await dev.authenticate(timeout=5.0)
        if isinstance(result, events.Authenticated):
            latencies.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.2)


async def _flooder(dev: SimDevice, sent: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if dev.session is None:
            await dev.authenticate(timeout=5.0)
            continue
        assert dev.client is not None
        topic = str(topics.data("gw-a", dev.hex, "telemetry"))
        for _ in range(200):
            dev.client.publish(topic, dev.session.seal(b"telemetry", b"x" * 64))
        sent[0] += 200
        await asyncio.sleep(0)


async def _window(victims: list[SimDevice], flooder: SimDevice | None) -> tuple[list[float], int]:
    stop = asyncio.Event()
    latencies: list[float] = []
    sent = [0]
    tasks = [asyncio.create_task(_victim(d, latencies, stop)) for d in victims]
    if flooder is not None:
        tasks.append(asyncio.create_task(_flooder(flooder, sent, stop)))
    await asyncio.sleep(1.0)
    latencies.clear()
    await asyncio.sleep(WINDOW_S)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, sent[0]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else float("nan")


async def _run(tmp: Path) -> dict[str, float]:
    async with site(tmp, n_devices=VICTIMS + 1, gateway_settings={"defence": BENCH_DEFENCE}) as s:
        gw = s.gateways["gw-a"]
        deadline = time.monotonic() + 300
        enforcer: Any = gw._enforcer
        while len(gw.devices) < VICTIMS + 1 or enforcer.device_count < VICTIMS + 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway does not know the fleet")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
        devs = [s.sim(i) for i in range(VICTIMS + 1)]
        for i in range(0, len(devs), 100):
            await asyncio.gather(*(d.connect(timeout=30) for d in devs[i : i + 100]))
        flooder, victims = devs[0], devs[1:]
        quiet, _ = await _window(victims, None)
        verified_before = gw.metrics.get("data_verified")
        loud, sent = await _window(victims, flooder)
        verified = gw.metrics.get("data_verified") - verified_before
        await asyncio.gather(*(d.close() for d in devs), return_exceptions=True)
    return {
        "victim_handshake_p99_ms_under_data_flood": round(_p(loud, 99), 2),
        "victim_handshake_p50_ms_under_data_flood": round(_p(loud, 50), 2),
        "victim_handshake_p99_ms_no_flood": round(_p(quiet, 99), 2),
        "flood_data_sent": float(sent),
        "flood_data_verified": float(verified),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="diams-bench-flood-") as tmp:
        return asyncio.run(_run(Path(tmp)))
