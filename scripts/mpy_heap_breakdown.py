"""Where the MicroPython agent's import heap goes, module by module, for this checkout or a git revision.

usage: .venv/bin/python scripts/mpy_heap_breakdown.py [--rev REV] [--empty MODULE ...]

The agent is compiled as bench/bench_mpy_agent.py compiles it (mpy-cross -O3 for device_agent/, the
default for umqtt.simple; firmware_sim/mpy/runner.py compile_one), then, under the real unix port in
its 80 KB heap, umqtt.simple, each core module the agent loads and the agent itself are imported one at
a time. For each the script prints the heap the import keeps (gc.mem_alloc() after gc.collect()) and
the qstrs it adds (micropython.qstr_info()); the last line is the total: the bench's
mpy_agent_import_heap_bytes measured from a smaller script (within ~1 KB of the bench's figure: where
the qstr pools' steps fall depends on the names the measuring script interned before the import).

--rev REV      measure the agent of another revision (git archive of its device_agent/), e.g. the
               commit a figure in bench/results.json was measured at
--empty M      replace core module M (topics, policy, ...) by a stub that defines only the names the
               agent takes from it, with no code: the floor the rest of the agent sits on without M

MicroPython's dynamic qstr pools grow in steps (the fifth, ~3.5 KB in this 64-bit port, opens a little
past 300 qstrs), so the module that crosses a step carries it: read the qstr column with the heap one.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_sim.mpy import agent as mpyagent  # noqa: E402
from firmware_sim.mpy import runner  # noqa: E402

# Import order: dependencies first, so that each line is the module's own cost.
ORDER = ("errors", "crypto", "otp", "wire", "keys", "states", "events", "session", "device", "topics",
         "policy")
# Prints, per import, "<module> <bytes kept>" then the port's own qstr_info() line. The names come
# one per argument: the port aborts ("FATAL: uncaught NLR") on an argument over 255 bytes (a qstr).
PROBE = """\
import gc, micropython, sys
gc.collect()
start = gc.mem_alloc()
last = start
micropython.qstr_info()
for name in sys.argv[1:]:
    __import__(name)
    gc.collect()
    now = gc.mem_alloc()
    print(name, now - last)
    micropython.qstr_info()
    last = now
print("total", last - start)
"""


def stub(module: str, agent_source: str) -> str:
    """A module defining only the names the agent reads from ``module`` (``module.NAME``), with no code."""
    names = sorted(set(re.findall(rf"\b{module}\.([A-Za-z_][A-Za-z0-9_]*)", agent_source)))
    lines = []
    for name in names:
        if name.isupper():
            lines.append(f"{name} = {name.lower()!r}")
        elif name[0].isupper():
            lines.append(f"class {name}:\n    def __init__(self, *a, **k):\n        self.stats = {{}}")
        else:
            lines.append(f"def {name}(*a, **k):\n    return ''")
    return "\n".join(lines) + "\n"


def _git(*args: str) -> bytes:
    cmd = ["git", "-C", str(REPO), *args]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout  # noqa: S603


def compile_revision(rev: str, dest: Path) -> None:
    """device_agent/ of ``rev``, compiled as compile_agent compiles this checkout's."""
    archive = _git("archive", rev, "device_agent")
    src = dest.parent / "src"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    base = src / "device_agent"
    board = [base / "__init__.py", *sorted((base / "core").glob("*.py")),
             *(base / "micropython" / f for f in ("__init__.py", "agent.py", "tls.py", "rekey.py"))]
    for py in board:
        if py.exists():
            rel = py.relative_to(src).with_suffix("")
            out = dest / rel.with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            runner.compile_one(py, out, str(rel))
    (dest / "umqtt").mkdir(exist_ok=True)
    runner.compile_one(mpyagent.VENDOR / "umqtt" / "simple.py", dest / "umqtt" / "simple.mpy", "umqtt/simple")
    (dest / "umqtt" / "__init__.py").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="a git revision (default: this checkout)")
    parser.add_argument("--empty", action="append", default=[], metavar="MODULE",
                        help="replace this core module by a stub without code (repeatable)")
    args = parser.parse_args()
    if runner.MICROPYTHON is None or runner.MPY_CROSS is None or not mpyagent.umqtt_available():
        print("needs micropython, mpy-cross and umqtt.simple: run `make bootstrap`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_name:
        dest = Path(tmp_name) / "mpy"
        if args.rev:
            compile_revision(args.rev, dest)
        else:
            mpyagent.compile_agent(dest)
        agent_mpy = dest / "device_agent" / "micropython" / "agent.mpy"
        core = dest / "device_agent" / "core"
        present = [m for m in ORDER if (core / f"{m}.mpy").exists()]
        for module in args.empty:
            if module not in present:
                print(f"--empty {module}: no such core module in this agent (have: {', '.join(present)})",
                      file=sys.stderr)
                return 2
            agent_py = "device_agent/micropython/agent.py"
            source = _git("show", f"{args.rev}:{agent_py}").decode() if args.rev else \
                (REPO / agent_py).read_text()
            fake = Path(tmp_name) / f"{module}.py"
            fake.write_text(stub(module, source))
            runner.compile_one(fake, core / f"{module}.mpy", f"device_agent/core/{module}")
        assert agent_mpy.exists()
        probe = Path(tmp_name) / "probe.py"
        probe.write_text(PROBE)
        names = ["umqtt.simple", *(f"device_agent.core.{m}" for m in present),
                 "device_agent.micropython.agent"]
        cmd = [runner.MICROPYTHON, "-X", f"heapsize={mpyagent.HEAP}", str(probe), *names]
        result = subprocess.run(cmd, env=runner._env([dest, mpyagent.VENDOR]),  # noqa: S603
                                capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0 or not result.stdout:
            print(result.stdout, file=sys.stderr)
            print(result.stderr.strip(), file=sys.stderr)
            return 1
        print(f"{'module':34} {'heap B':>7} {'+qstr':>5} {'qstrs':>5}")
        qstrs = [int(n) for n in re.findall(r"n_qstr=(\d+)", result.stdout)]
        rows = [line.split() for line in result.stdout.splitlines() if not line.startswith("qstr pool")]
        for (name, kept), before, after in zip(rows, qstrs, qstrs[1:], strict=False):
            print(f"{name:34} {int(kept):7,} {after - before:5} {after:5}")
        print(f"{'total':34} {int(rows[-1][1]):7,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
