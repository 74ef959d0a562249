"""``e2e_handshakes_per_s_tls`` and ``e2e_tls_vs_plain``: handshakes per second with the devices on MQTT
over TLS, and its ratio to the same run over plain TCP (target ≥ 0.7).

Setup: ``firmware_sim.inproc.site(tls=True, plain_listener=True)``: one mosquitto with a TLS listener
(certificate from a test CA made with ``cryptography``, TLS 1.2, ECDSA P-256) and a plain loopback
listener with the same accounts; the gateway daemon (in this process) on the TLS listener in both runs.
``BENCH_TLS_DEVICES`` (default 200) ``SimDevice``s, each its own connection, authenticate in a closed
loop for ``WINDOW_S`` seconds, first all over plain TCP, then all over TLS (connections made before
the window: the figure is the steady-state cost of TLS records, not of TLS handshakes);
``e2e_tls_connect_ms`` is the mean time to open one device's TLS connection (TCP + TLS + CONNECT).
Everything shares a 2-core machine with the load generator.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from device_agent.core import events
from firmware_sim.device import SimDevice
from firmware_sim.inproc import site
from gateway.settings import DefenceSettings

DEVICES = int(os.environ.get("BENCH_TLS_DEVICES", "200"))
WINDOW_S = float(os.environ.get("BENCH_TLS_WINDOW_S", "6"))
BENCH_DEFENCE = DefenceSettings(device_rate=50.0, device_burst=100)


async def _loop(dev: SimDevice, count: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if isinstance(await dev.authenticate(timeout=5.0), events.Authenticated):
            count[0] += 1


async def _rate(devs: list[SimDevice]) -> float:
    stop, count = asyncio.Event(), [0]
    tasks = [asyncio.create_task(_loop(d, count, stop)) for d in devs]
    await asyncio.sleep(1.0)
    start, t0 = count[0], time.perf_counter()
    await asyncio.sleep(WINDOW_S)
    rate = (count[0] - start) / (time.perf_counter() - t0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def _run(tmp: Path) -> dict[str, float]:
    async with site(tmp, n_devices=DEVICES, tls=True, plain_listener=True,
                    gateway_settings={"defence": BENCH_DEFENCE}) as s:
        gw = s.gateways["gw-a"]
        enforcer: Any = gw._enforcer
        deadline = time.monotonic() + 300
        while len(gw.devices) < DEVICES or enforcer.device_count < DEVICES:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway does not know the fleet")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
        plain = [s.sim(i, tls=None) for i in range(DEVICES)]
        await asyncio.gather(*(d.connect(timeout=30) for d in plain))
        plain_rate = await _rate(plain)
        await asyncio.gather(*(d.close() for d in plain), return_exceptions=True)
        tls = plain  # the same devices (their counters go on), now over TLS
        context = ssl.create_default_context(cafile=str(s.tls_ca))
        for d in tls:
            d.tls, d.port = context, s.broker.port
        t0 = time.perf_counter()
        for i in range(0, DEVICES, 50):
            await asyncio.gather(*(d.connect(timeout=30) for d in tls[i : i + 50]))
        connect_ms = (time.perf_counter() - t0) * 1000 / DEVICES
        tls_rate = await _rate(tls)
        await asyncio.gather(*(d.close() for d in tls), return_exceptions=True)
    return {
        "e2e_handshakes_per_s_tls": round(tls_rate, 1),
        "e2e_handshakes_per_s_plain_same_run": round(plain_rate, 1),
        "e2e_tls_vs_plain": round(tls_rate / plain_rate, 3) if plain_rate else float("nan"),
        "e2e_tls_connect_ms": round(connect_ms, 2),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="diams-bench-tls-") as tmp:
        return asyncio.run(_run(Path(tmp)))
