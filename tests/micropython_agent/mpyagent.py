"""Runs the MicroPython agent (device_agent/micropython) under the real unix port, as a subprocess.

Also used by bench/bench_mpy_agent.py, so it imports nothing from pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.micropython import runner

REPO = runner.REPO
VENDOR = REPO / ".vendor" / "micropython"
SCRIPT = Path(__file__).resolve().parent / "scripts" / "run_agent.py"


def umqtt_available(fetch: bool = True) -> bool:
    """umqtt.simple in .vendor/micropython; fetched (scripts/fetch_umqtt.py, SHA-256 pinned) if missing."""
    target = VENDOR / "umqtt" / "simple.py"
    if not target.exists() and fetch:
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_umqtt.py"), str(VENDOR)], check=False,
                       timeout=120, capture_output=True)
    return target.exists()


def start(*, host: str, port: int, device_hex: str, secret: bytes, fw: bytes, gateways: list[str],
          state: Path, answer_ms: int = 3000, n_data: int = 3, heap: str = "64K",
          path: list[Path] | None = None, only: bool = False) -> subprocess.Popen[str]:
    """``path``: directories searched first (e.g. compiled .mpy files); then the sources, unless
    ``only`` (e.g. a mip install target: nothing from the checkout)."""
    assert runner.MICROPYTHON, "micropython is not installed"
    dirs = [str(p) for p in (path or [])] + ([] if only else [str(REPO), str(VENDOR)]) + [".frozen"]
    env = {**os.environ, "MICROPYPATH": ":".join(dirs)}
    args = [runner.MICROPYTHON, "-X", f"heapsize={heap}", str(SCRIPT), host, str(port), device_hex,
            secret.hex(), fw.hex(), ",".join(gateways), str(state), str(answer_ms), str(n_data)]
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
