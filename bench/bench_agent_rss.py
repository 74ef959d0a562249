"""The paho agent's memory, steady: ``agent_rss_mb``.

``diams-agent run`` as its own process (as systemd runs it), against real Mosquitto and the gateway
daemon (``tests.gateway.stack.site``), authenticated, publishing one stream (``/proc/loadavg``) every
0.5 s; its resident set (``VmRSS`` in /proc/<pid>/status) is sampled for 20 s once the first DATA has
been verified, and the largest sample is reported. Also: ``agent_rss_data_verified`` (DATA messages the
gateway verified meanwhile, so the figure is of a working agent).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECONDS = float(os.environ.get("BENCH_AGENT_RSS_SECONDS", "20"))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _run() -> dict[str, float]:
    from tests import waiting
    from tests.agent.helpers import Device
    from tests.gateway.stack import site
    from tests.gateway.test_agents_e2e import _onboard

    eventually = functools.partial(waiting.eventually, timeout=60.0)

    with tempfile.TemporaryDirectory(prefix="diams-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        async with site(tmp, n_devices=1) as s:
            (tmp / "dev").mkdir()
            dev = Device(tmp / "dev", serial="RSS-1")
            await _onboard(s, dev)
            with dev.prov.config_file.open("a") as fh:
                fh.write('\n[[streams]]\nname = "telemetry"\nsource = "/proc/loadavg"\ninterval_s = 0.5\n')
            gw = s.gateways["gw-a"]
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
                if not await eventually(lambda: gw.metrics.get("data_verified") >= 1, timeout=60):
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
