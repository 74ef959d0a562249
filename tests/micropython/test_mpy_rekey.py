"""The device side of re-keying under real MicroPython (pure X25519, modules loaded from .mpy): the
pinned exchange byte for byte (DONE included), and enough with 16 KB of free heap. Figures:
bench/bench_rekey.py."""

import json

import pytest

from firmware_sim.mpy import runner
from firmware_sim.mpy.runner import REKEY_MODULES, rekey_args
from tests.conftest import require

pytestmark = pytest.mark.micropython

HEAP_TARGET = 16 * 1024


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory):
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    path = tmp_path_factory.mktemp("mpy-rekey")
    runner.compile_modules(path, REKEY_MODULES)
    return path


def test_the_pinned_exchange_under_micropython(mpy_dir):
    proc = runner.run("rekey_device.py", *rekey_args(), path=[mpy_dir], timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    v = json.loads((runner.VECTORS / "rekey_transcript.json").read_text())
    assert (out["reply"], out["new_secret"], out["done"]) == (v["reply"], v["new_secret"], v["done"])


def test_rekey_succeeds_with_16k_of_free_heap_and_the_cap_is_real(mpy_dir):
    proc = runner.run("rekey_device.py", *rekey_args(), "cap", str(HEAP_TARGET), path=[mpy_dir], timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ok"] is True and result["free"] <= HEAP_TARGET + 512
    proc = runner.run("rekey_device.py", *rekey_args(), "cap", "2048", path=[mpy_dir], timeout=300)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ok"] is False and result["free"] <= 4096
