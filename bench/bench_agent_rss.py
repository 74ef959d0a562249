"""The paho agent's memory, steady: ``agent_rss_mb``.

``diams-agent run`` as its own process (as systemd runs it), against real Mosquitto and the gateway
daemon (``bench._inproc``), authenticated, publishing one stream (``/proc/loadavg``) every
0.5 s; its resident set (``VmRSS`` in /proc/<pid>/status) is sampled for 20 s once the first DATA has
been verified, and the largest sample is reported. Also: ``agent_rss_data_verified`` (DATA messages the
gateway verified meanwhile, so the figure is of a working agent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECONDS = float(os.environ.get("BENCH_AGENT_RSS_SECONDS", "20"))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _run() -> dict[str, float]:
    from bench._inproc import inproc_site
    from firmware_sim.agents import Device

    with tempfile.TemporaryDirectory(prefix="diams-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        async with inproc_site(tmp, n_devices=0) as s:
            (tmp / "dev").mkdir()
            dev = Device(tmp / "dev", serial="RSS-1")
            did = await s.onboard_bundle(dev.prov.owner_file)
            gw = s.gateways["gw-a"]

            async def until(predicate: Any, timeout: float) -> bool:
                deadline = time.monotonic() + timeout
                while not predicate():
                    if time.monotonic() > deadline:
                        return False
                    await asyncio.sleep(0.05)
                return True

            if not await until(lambda: did in gw.devices.entries, 60):
                raise RuntimeError("the gateway never saw the device")
            # its broker account written and live (flush: the enforcer's batched reload is done)
            assert s.enforcer is not None
            enforcer = s.enforcer
            if not await until(lambda: did.hex() in enforcer.password_file.read_text(), 60):
                raise RuntimeError("the device's broker account was never written")
            await enforcer.flush()
            with dev.prov.config_file.open("a") as fh:
                fh.write('\n[[streams]]\nname = "telemetry"\nsource = "/proc/loadavg"\ninterval_s = 0.5\n')
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "device_agent.agent.cli",
                    "run",
                    "--config",
                    str(dev.prov.config_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "DIAMS_BROKER_PORT": str(s.broker.port)},
            )
            try:
                if not await until(lambda: gw.metrics.get("data_verified") >= 1, 60):
                    raise RuntimeError("the agent's data never verified")
                first = gw.metrics.get("data_verified")
                samples = []
                end = time.monotonic() + SECONDS
                while time.monotonic() < end:
                    samples.append(_rss_mb(proc.pid))
                    await asyncio.sleep(0.5)
                verified = gw.metrics.get("data_verified") - first
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 20)
    return {"agent_rss_mb": max(samples), "agent_rss_data_verified": float(verified)}


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12,.2f}")
