"""``gateway_restart_recovery_s``: devices streaming data, the gateway stopped and started again; seconds
from the stop until every device's data verify again (target ≤ 10 s).

Setup: ``firmware_sim.inproc.site`` (a private mosquitto with the enforcer's files, an in-process
EVM, the gateway daemon in this process) with ``BENCH_RESTART_DEVICES`` devices (default 1,000, the
issue's fleet), each a ``SimDevice`` on its own MQTT connection, all in this process
(so the load generator competes with the gateway for the 2 cores). Each device authenticates, then
sends one DATA message every second (its agent's behaviour: when its policy ends the session on the
gateway's no-session signal, it authenticates again first). The devices' last handshake is more than
``min_reauth`` (10 s) old when the gateway stops, as in the field. The gateway is stopped (sessions
gone with its memory), 0.5 s pass, and it starts again on the same state directory.

``gateway_restart_lost_messages``: DATA messages sent and never verified (the ones sent into the gap and
before each device learnt it had no session; nothing is lost silently: each such message is counted
``data_dropped{no_session}`` and answered by a no-session signal). ``gateway_restart_devices`` is the
fleet size.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from device_agent.core import events
from firmware_sim.device import SimDevice
from firmware_sim.inproc import site, start_gateway, stop_gateway
from gateway.mqtt import MqttConnectError

# the fleet: 42 s on the quiet machine since the index decodes logs with eth_abi (was ~5 min)
N = int(os.environ.get("BENCH_RESTART_DEVICES", "1000"))
PERIOD = 1.0


async def _connect(dev: SimDevice) -> None:
    for _ in range(60):
        try:
            await dev.connect(timeout=30)
            return
        except MqttConnectError:
            await asyncio.sleep(0.5)
    await dev.connect(timeout=30)


async def _stream(dev: SimDevice, sent: list[int], stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        if dev.session is None:
            result = await dev.authenticate(timeout=5.0)
            if not isinstance(result, events.Authenticated):
                await asyncio.sleep(0.5)
                continue
        seq += 1
        dev.send_data("telemetry", b"%s %d" % (dev.hex.encode(), seq))
        sent.append(seq)
        await asyncio.sleep(PERIOD)


async def _run(tmp: Path) -> dict[str, float]:
    async with site(tmp, n_devices=N) as s:
        gw = s.gateways["gw-a"]
        devs = [s.sim(i) for i in range(N)]
        deadline = time.monotonic() + 300  # the gateway's index catches up with the onboarding first
        while len(gw.devices) < N or gw._enforcer.device_count < N:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway knows {len(gw.devices)} of {N} devices after 300 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # the enforcer's batched reload
        for i in range(0, N, 100):  # the broker learns the enrolments from the index (batched reloads)
            await asyncio.gather(*(_connect(d) for d in devs[i : i + 100]))
        listener, got = await s.listener("gw-a")
        stop = asyncio.Event()
        sent: dict[bytes, list[int]] = {d.device_id: [] for d in devs}
        tasks = [asyncio.create_task(_stream(d, sent[d.device_id], stop)) for d in devs]
        try:
            deadline = time.monotonic() + 120
            while len({p.split()[0] for _, p in got}) < N:
                if time.monotonic() > deadline:
                    raise RuntimeError("the fleet did not stream before the restart")
                await asyncio.sleep(0.1)
            await asyncio.sleep(11.0)  # the last handshakes are older than the policy's min_reauth
            enforcer = gw._enforcer
            down = time.monotonic()
            await stop_gateway(s, "gw-a")
            await asyncio.sleep(0.5)
            gw = await start_gateway(s, "gw-a", tmp, enforcer=enforcer)
            mark = len(got)
            deadline = time.monotonic() + 120
            while len({p.split()[0] for _, p in got[mark:]}) < N:
                if time.monotonic() > deadline:
                    raise RuntimeError("not every device recovered within 120 s")
                await asyncio.sleep(0.02)
            recovery = time.monotonic() - down
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
        lost = sum(len(v) for v in sent.values()) - len(got)
        await listener.close()
        await asyncio.gather(*(d.close() for d in devs), return_exceptions=True)
    return {
        "gateway_restart_recovery_s": round(recovery, 3),
        "gateway_restart_lost_messages": float(lost),
        "gateway_restart_devices": float(N),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="diams-bench-restart-") as tmp:
        return asyncio.run(_run(Path(tmp)))
