"""scripts/mpy_heap_breakdown.py, the tool behind AGENT.md's import-heap analysis, measures what it says."""

from __future__ import annotations

import subprocess
import sys

from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from tests.conftest import require

SCRIPT = runner.REPO / "scripts" / "mpy_heap_breakdown.py"


def _rows(*args: str) -> dict[str, tuple[int, ...]]:
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython (scripts/fetch_umqtt.py)")
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        name, *numbers = line.split()
        rows[name] = tuple(int(n.replace(",", "")) for n in numbers)
    return rows


def test_each_module_is_measured_and_the_total_is_their_sum():
    rows = _rows()
    modules = [name for name in rows if name != "total"]
    assert modules[0] == "umqtt.simple" and modules[-1] == "device_agent.micropython.agent"
    assert {f"device_agent.core.{m}" for m in runner.AGENT_MODULES if m != "__init__"} <= set(modules)
    assert rows["total"][0] == sum(rows[m][0] for m in modules)
    assert all(rows[m][0] > 0 and rows[m][1] > 0 for m in modules)  # every import keeps heap and adds names
    qstrs = [rows[m][2] for m in modules]
    assert qstrs == sorted(qstrs)
    assert all(rows[m][1] == b - a for m, a, b in zip(modules[1:], qstrs, qstrs[1:], strict=False))


def test_empty_replaces_a_module_by_a_stub_the_agent_still_imports():
    full, floor = _rows()["device_agent.core.policy"], _rows("--empty", "policy")["device_agent.core.policy"]
    assert floor[0] < full[0] and floor[1] < full[1]


def test_an_unknown_module_is_refused_with_the_modules_there_are():
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    result = subprocess.run([sys.executable, str(SCRIPT), "--empty", "nope"], capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 2
    assert "--empty nope: no such core module" in result.stderr and "policy" in result.stderr
