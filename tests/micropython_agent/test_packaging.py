"""package.json (mpremote mip install) and manifest.py list what the MicroPython agent needs, no more."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess

import pytest

from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from tests.conftest import require

PKG = runner.REPO / "device_agent" / "micropython"
# the re-key modules (PROTOCOL.md 2.3) are installed too, and imported only when a re-key starts
REKEY = ["device_agent/core/rekey.py", "device_agent/core/x25519.py", "device_agent/micropython/rekey.py"]
EXPECTED = (["device_agent/__init__.py"] + [f"device_agent/core/{m}.py" for m in runner.AGENT_MODULES]
            + ["device_agent/micropython/__init__.py", "device_agent/micropython/agent.py"] + REKEY)


def _package_json() -> dict:
    return json.loads((PKG / "package.json").read_text())


def test_package_json_lists_the_device_core_and_the_adapter():
    pkg = _package_json()
    targets = [t for t, _ in pkg["urls"]]
    assert sorted(targets) == sorted(EXPECTED)
    for target, url in pkg["urls"]:
        # relative to package.json: the files of this checkout (tests/field/test_mip.py installs them)
        assert (PKG / url).resolve() == (runner.REPO / target).resolve()
        assert (runner.REPO / target).is_file()
    assert ["umqtt.simple", "latest"] in pkg["deps"]
    assert "device_agent/core/gateway.py" not in targets


def test_manifest_freezes_the_same_files():
    tree = ast.parse((PKG / "manifest.py").read_text())
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    files = next(k.value for k in calls["package"].keywords if k.arg == "files")
    listed = ["device_agent/" + ast.literal_eval(e) for e in files.elts]
    assert sorted(listed) == sorted(EXPECTED)
    assert ast.literal_eval(calls["require"].args[0]) == "umqtt.simple"


@pytest.mark.micropython
def test_installed_file_set_imports_under_micropython(tmp_path):
    """What mip would put in /lib (the listed files + umqtt.simple) imports and builds an agent."""
    require(runner.MICROPYTHON is not None, "micropython")
    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython (scripts/fetch_umqtt.py)")
    lib = tmp_path / "lib"
    for target, _ in _package_json()["urls"]:
        (lib / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runner.REPO / target, lib / target)
    shutil.copytree(mpyagent.VENDOR / "umqtt", lib / "umqtt")
    code = ("from device_agent.micropython.agent import Agent\n"
            "a = Agent(bytes(8), bytes(32), bytes(32), ['gw-a'], '127.0.0.1', state_path='%s')\n"
            "print(a.client.user, a.policy.login_epoch)\n"
            "from device_agent.micropython import rekey\n"
            "print(rekey.make_device_key('%s').hex())\n") % (tmp_path / "st", tmp_path / "dk")
    # From .py sources the board compiles each module at import: that peak needs more than the
    # compiled agent's heap (mpyagent.HEAP); a 96 KB heap holds it (an ESP32 has ~100+ KB after Wi-Fi).
    proc = subprocess.run([runner.MICROPYTHON, "-X", "heapsize=96K", "-c", code], cwd=tmp_path,
                          env={**os.environ, "MICROPYPATH": f"{lib}:.frozen"}, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    from device_agent.agent.x25519 import x25519
    private = bytes.fromhex((tmp_path / "dk").read_text().strip())
    assert proc.stdout.split() == [bytes(8).hex(), "0", x25519(private, b"\x09" + bytes(31)).hex()]


@pytest.mark.micropython
def test_examples_compile_with_mpy_cross():
    require(runner.MPY_CROSS is not None, "mpy-cross")
    for src in [*sorted((PKG / "examples").glob("*.py")), PKG / "agent.py"]:
        subprocess.run([runner.MPY_CROSS, "-o", os.devnull, str(src)], check=True, capture_output=True,
                       timeout=60)
