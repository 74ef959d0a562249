"""Reconnect storm: N diams-agent instances connected to a real Mosquitto, then the broker restarts.

reconnect_storm_peak_per_s: the most reconnections in any 1-second window after the restart (the
broker accepts ~650-1,300 connects/s on this machine class, FACTS.md); reconnect_storm_all_back_s and
reconnect_storm_median_s: until every agent / half of them are connected again;
reconnect_storm_agents: N (env BENCH_AGENTS, default 1,000).

Each agent is a real MqttAgent (paho, its own thread) with the default reconnect policy: full jitter
from U(0, reconnect_base_s = 5 s), doubling, capped at 60 s. The agents' gateway never answers (this
measures the MQTT layer): each has sent one HELLO and waits. paho waits with select(), which cannot
watch descriptors above 1023, and each client holds three, so the agents run in worker processes of
at most 250 (a real device runs one agent); connect times are CLOCK_MONOTONIC, system-wide on Linux.
"""

from __future__ import annotations

import bisect
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device_agent.agent.config import AgentConfig
from device_agent.agent.keystore import DeviceSecret, save_secret
from device_agent.agent.mqtt import MqttAgent
from firmware_sim.broker import MosquittoBroker

PER_PROCESS = 250


def peak_per_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, t + window) - i for i, t in enumerate(times)), default=0)


def worker(host: str, port: int, count: int, out: Path) -> None:
    """Run ``count`` agents; append each successful connect's monotonic time to ``out``; stop on SIGTERM."""
    logging.getLogger("diams.agent").setLevel(logging.ERROR)  # "broker unreachable" x N is expected here
    lock = threading.Lock()
    fh = out.open("a", buffering=1)

    class TimedAgent(MqttAgent):
        def _handle(self, kind: str, value: Any) -> None:
            if kind == "connect" and value:
                with lock:
                    fh.write(f"{time.monotonic()}\n")
            super()._handle(kind, value)

    tmp = Path(tempfile.mkdtemp(prefix="diams-storm-"))
    agents = []
    for i in range(count):
        key = tmp / f"{i}.key"
        save_secret(key, DeviceSecret(os.urandom(32)))
        config = AgentConfig(device_id=os.urandom(8).hex(), key_file=key, state_file=tmp / f"{i}.json",
                             firmware_hash=bytes(32), gateways=("gw-none",), broker_host=host,
                             broker_port=port, answer_timeout_s=3600.0, keepalive_s=60)
        agents.append(TimedAgent(config, DeviceSecret(os.urandom(32))))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for t in threads:
        t.start()
    done.wait()
    for a in agents:
        a.stop()
    for t in threads:
        t.join(5)


def _count(files: list[Path]) -> list[float]:
    times: list[float] = []
    for f in files:
        if f.exists():
            times += [float(x) for x in f.read_text().split()]
    return times


def _wait_count(files: list[Path], n: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(times := _count(files)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(times)} of {n} connections within {timeout} s")
        time.sleep(0.1)
    return times


def run() -> dict[str, float]:
    n = int(os.environ.get("BENCH_AGENTS", "1000"))
    with tempfile.TemporaryDirectory() as tmp_name, \
            MosquittoBroker(extra_config=["allow_anonymous true", "use_username_as_clientid true"]) as broker:
        tmp = Path(tmp_name)
        files, procs = [], []
        try:
            for w, start in enumerate(range(0, n, PER_PROCESS)):
                out = tmp / f"w{w}.txt"
                files.append(out)
                args = ["worker", broker.host, str(broker.port), str(min(PER_PROCESS, n - start)), str(out)]
                procs.append(subprocess.Popen([sys.executable, "-m", "bench.bench_agent_reconnect", *args],
                                              cwd=Path(__file__).resolve().parents[1]))
            _wait_count(files, n, 180)
            time.sleep(1.0)
            broker.restart()
            t0 = time.monotonic()
            times = sorted(_wait_count(files, 2 * n, 240))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
    back = [t - t0 for t in times if t > t0]
    return {
        # paho agents (diams-agent); bench_sim's reconnect_storm_* are the simulated fleet's
        "agent_reconnect_storm_agents": float(n),
        "agent_reconnect_storm_peak_per_s": float(peak_per_window(back)),
        "agent_reconnect_storm_all_back_s": round(max(back), 3),
        "agent_reconnect_storm_median_s": round(back[len(back) // 2], 3),
    }


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "worker":
    worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
