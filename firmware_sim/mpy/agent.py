"""Runs the MicroPython agent (device_agent/micropython) under the real unix port, as a subprocess.

Also used by bench/bench_mpy_agent.py, so it imports nothing from pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware_sim.mpy import runner

REPO = runner.REPO
VENDOR = REPO / ".vendor" / "micropython"
SCRIPT = Path(__file__).resolve().parent / "scripts" / "run_agent.py"
# The heap the agent runs in: the core, the topic module, the agent policy, umqtt.simple and the agent
# loaded from .mpy keep ~45 KB in this 64-bit port (the measured handshake needs <= 16 KB more); 64 KB
# sufficed before the policy and the topic module moved into the core as shared modules.
HEAP = "80K"


def umqtt_available(fetch: bool = True) -> bool:
    """umqtt.simple in .vendor/micropython; fetched (scripts/fetch_umqtt.py, SHA-256 pinned) if missing."""
    target = VENDOR / "umqtt" / "simple.py"
    if not target.exists() and fetch:
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_umqtt.py"), str(VENDOR)], check=False,
                       timeout=120, capture_output=True)
    return target.exists()


def compile_agent(dest: Path) -> int:
    """What a board runs, compiled by mpy-cross into ``dest``: the core's agent modules, the agent (with
    its TLS module, imported only given tls_ca) and umqtt.simple (a board freezes them, see manifest.py)
    -> the agent's own .mpy bytes."""
    assert runner.MPY_CROSS, "mpy-cross is not installed"
    runner.compile_modules(dest, runner.AGENT_MODULES)
    (dest / "device_agent" / "micropython").mkdir(parents=True, exist_ok=True)
    (dest / "umqtt").mkdir(exist_ok=True)
    for name, src in (("device_agent/micropython/__init__", REPO / "device_agent/micropython/__init__.py"),
                      ("device_agent/micropython/agent", REPO / "device_agent/micropython/agent.py"),
                      ("device_agent/micropython/tls", REPO / "device_agent/micropython/tls.py"),
                      ("umqtt/simple", VENDOR / "umqtt" / "simple.py")):
        runner.compile_one(src, dest / f"{name}.mpy", name)
    (dest / "umqtt" / "__init__.py").write_text("")
    return (dest / "device_agent" / "micropython" / "agent.mpy").stat().st_size


_compiled: list[Path] = []


def compiled() -> Path:
    """One compiled copy per test process (in a temporary directory)."""
    if not _compiled:
        _compiled.append(Path(tempfile.mkdtemp(prefix="diams-mpy-agent-")))
        compile_agent(_compiled[0])
    return _compiled[0]


def start(*, host: str, port: int, device_hex: str, secret: bytes, fw: bytes, gateways: list[str],
          state: Path, answer_ms: int = 3000, n_data: int = 3, heap: str = HEAP,
          path: list[Path] | None = None, only: bool = False) -> subprocess.Popen[str]:
    """``path``: directories searched first (default: the compiled agent, as a board runs it); with
    ``only``, nothing else from the checkout (e.g. a mip install target)."""
    assert runner.MICROPYTHON, "micropython is not installed"
    dirs = [str(p) for p in (path or [compiled()])] + ([] if only else [str(REPO), str(VENDOR)]) + [".frozen"]
    env = {**os.environ, "MICROPYPATH": ":".join(dirs)}
    args = [runner.MICROPYTHON, "-X", f"heapsize={heap}", str(SCRIPT), host, str(port), device_hex,
            secret.hex(), fw.hex(), ",".join(gateways), str(state), str(answer_ms), str(n_data)]
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
