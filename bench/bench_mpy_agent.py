"""MicroPython agent figures under the real unix port, against a real Mosquitto and a gateway responder.

mpy_agent_heap_peak_bytes: an upper bound of the heap one handshake of the MicroPython agent
(device_agent/micropython/agent.py over umqtt.simple) uses: gc.collect(); gc.disable(); the
difference in gc.mem_alloc() across ``Agent.authenticate()``, i.e. every byte allocated, freed or
not: key derivation, DeviceRole, MQTT publishes and received packets, and the write-ahead counter
file write (forced into the window). Target <= 16,384 (issue 5). In this 64-bit port's bytes.
mpy_agent_free_heap_before_bytes: the heap still free (of the runs' heap, mpyagent.HEAP: 80 KB since
the topic module and the agent policy became shared core modules, 64 KB before) just before it, with
the core, the agent and umqtt.simple loaded from .mpy files (bytecode in RAM; frozen into flash on a
board build it would not be). mpy_agent_import_heap_bytes: what importing them keeps allocated
(core, umqtt.simple, agent; from .mpy). mpy_agent_adapter_mpy_bytes: agent.py compiled by mpy-cross.
DIAMS's modules are compiled with ``mpy-cross -O3`` (no line-number tables, no asserts), as the board
build freezes them (device_agent/micropython/manifest.py, ``opt=3``) and mip installs them
(scripts/mip_index.py); umqtt.simple with mpy-cross's default (firmware_sim/mpy/runner.py compile_one).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from firmware_sim.agents import Device
from firmware_sim.broker import MosquittoBroker
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from firmware_sim.responder import Responder, entry_for


def run() -> dict[str, float]:
    if runner.MICROPYTHON is None or runner.MPY_CROSS is None or not mpyagent.umqtt_available():
        raise RuntimeError("needs micropython, mpy-cross and umqtt.simple (scripts/fetch_umqtt.py)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # What a board installs, compiled: the core's agent modules, the agent and umqtt.simple.
        mpy = tmp / "mpy"
        adapter_bytes = mpyagent.compile_agent(mpy)
        dev = Device(tmp, serial="BENCH-1")
        entries = {dev.device_id: entry_for(dev.secret, dev.device_id, "gw-a", dev.fw)}
        samples = []
        config = ["allow_anonymous true", "use_username_as_clientid true"]
        with MosquittoBroker(extra_config=config) as broker, \
                Responder(broker.host, broker.port, "gw-a", entries) as gw:
            for i in range(3):
                proc = mpyagent.start(host=broker.host, port=broker.port, device_hex=dev.device_hex,
                                      secret=dev.secret, fw=dev.fw, gateways=["gw-a"],
                                      state=tmp / "mpy.state", n_data=1, path=[mpy])
                gw.next_verified(timeout=20)
                gw.send_command(dev.device_hex, "config", b"x")
                stdout, stderr = proc.communicate(timeout=30)
                if proc.returncode != 0:
                    raise RuntimeError(f"MicroPython agent failed: {stderr.strip()[-500:]}")
                merged: dict = {}
                for line in stdout.splitlines():
                    if line.startswith("{"):
                        merged.update(json.loads(line))
                samples.append(merged)
                del i
    return {
        "mpy_agent_heap_peak_bytes": float(max(s["heap_alloc_total"] for s in samples)),
        "mpy_agent_free_heap_before_bytes": float(min(s["free_before"] for s in samples)),
        "mpy_agent_import_heap_bytes": float(max(s["import_heap"] for s in samples)),
        "mpy_agent_adapter_mpy_bytes": float(adapter_bytes),
    }
