"""The Raspberry Pi install, followed literally: ``scripts/install-pi.sh`` (the script docs/AGENT.md
and docs/GATEWAY.md name) into a temporary root on this machine; every path, owner and mode checked;
``systemd-analyze verify`` on the installed units; then the installed agent started as its service user
(``setpriv``, which execs like systemd's ``User=``), at the paths the unit names, against a real broker
and gateway until its data verifies.

The installed files are seen at their real paths (/etc/diams-agent, /var/lib/diams-agent, /opt/diams)
through a private mount namespace: read-only overlays of the temporary root over /etc, /var/lib and
/opt, with the agent's state directory bound writable. Nothing outside the temporary root is written,
except the system users the script makes (as it would on a Pi).
"""

from __future__ import annotations

import asyncio
import functools
import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.core import topics
from firmware_sim.tls import make_test_ca
from tests import waiting
from tests.agent.helpers import Device
from tests.conftest import require
from tests.gateway.stack import site
from tests.gateway.test_agents_e2e import _listener, _onboard

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-pi.sh"
VENV = "/opt/diams/.venv"
AGENT_UNIT = "etc/systemd/system/diams-agent.service"
GATEWAY_UNIT = "etc/systemd/system/diams-gateway.service"

# agents reconnect with backoff and share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


def _require_root_tools() -> None:
    require(os.geteuid() == 0, "root (the install makes system users and root-owned directories)")
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    require(shutil.which("setpriv") is not None and shutil.which("unshare") is not None,
            "setpriv and unshare (util-linux)")


@pytest.fixture
def target_root() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700 root, and the service user must traverse the root.
    root = Path(tempfile.mkdtemp(prefix="diams-pi-root-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def install(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=540,
                          env=env)


def owner_mode(path: Path) -> tuple[str, str, int]:
    st = path.lstat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


AGENT_LAYOUT = {
    "opt/diams": ("root", "root", 0o755),
    "opt/diams/.venv": ("root", "root", 0o755),
    "etc/diams-agent": ("root", "diams-agent", 0o750),
    "etc/diams-agent/agent.toml": ("root", "diams-agent", 0o640),
    "var/lib/diams-agent": ("diams-agent", "diams-agent", 0o700),
    "var/lib/diams-agent/secret.key": ("diams-agent", "diams-agent", 0o600),
    "etc/systemd/system/diams-agent.service": ("root", "root", 0o644),
}


def in_target(root: Path, argv: list[str], *, env: dict[str, str] | None = None,
              user: str = "diams-agent", state: str = "diams-agent") -> subprocess.Popen[str]:
    """Run ``argv`` as ``user`` with the installed tree at its real paths (a private mount namespace)."""
    mounts = " && ".join([
        f"mount -t overlay overlay -o lowerdir={root}/etc:/etc /etc",
        f"mount -t overlay overlay -o lowerdir={root}/var/lib:/var/lib /var/lib",
        f"mount -t overlay overlay -o lowerdir={root}/opt:/opt /opt",
        f"mount --bind {root}/var/lib/{state} /var/lib/{state}",
    ])
    # setpriv execs the program as the user (as systemd's User= does); runuser would stay its parent
    # and exit by the signal it forwards, hiding the agent's own exit status.
    drop = f"setpriv --reuid={user} --regid={user} --init-groups"
    shell = f'{mounts} && exec {drop} "$@"'
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh",
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})})


def test_script_refuses_an_agent_without_its_factory_files(target_root: Path) -> None:
    _require_root_tools()
    done = install("agent", "--root", target_root)
    assert done.returncode == 2, done.stderr
    assert "--config" in done.stderr and "--key" in done.stderr
    assert not (target_root / "etc").exists()


@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_pi_install_runs_the_agent_as_its_user_until_its_data_verifies(
        tmp_path: Path, target_root: Path) -> None:
    _require_root_tools()
    async with site(tmp_path, n_devices=1) as s:
        factory = tmp_path / "factory"
        factory.mkdir()
        dev = Device(factory, serial="PI-INSTALL")
        await _onboard(s, dev)

        done = await asyncio.to_thread(install, "agent", "--root", target_root,
                                       "--config", dev.prov.config_file, "--key", dev.prov.key_file)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "secret" not in done.stdout.lower() or "secret.key" in done.stdout  # no secret printed
        assert dev.secret.hex() not in done.stdout + done.stderr

        # every path, owner and mode the docs promise
        for rel, expected in AGENT_LAYOUT.items():
            assert owner_mode(target_root / rel) == expected, rel
        assert (target_root / "var/lib/diams-agent/secret.key").read_bytes() == dev.prov.key_file.read_bytes()
        toml = (target_root / "etc/diams-agent/agent.toml").read_text()
        assert 'key_file = "/var/lib/diams-agent/secret.key"' in toml
        assert 'state_file = "/var/lib/diams-agent/state.json"' in toml
        # the venv and the entry point the unit starts, runnable at the target path
        entry = target_root / VENV.lstrip("/") / "bin" / "diams-agent"
        assert re.fullmatch(rf"#!{VENV}/bin/python3?", entry.read_text().splitlines()[0])
        for p in [target_root / "opt/diams", *(target_root / "opt/diams").rglob("*")]:
            if not p.is_symlink():
                assert not p.stat().st_mode & 0o022, f"{p} is writable by group or others"

        # the installed unit passes systemd-analyze verify (ExecStart must exist under the root)
        unit = target_root / "etc/systemd/system/diams-agent.service"
        verify = in_target(target_root, ["systemd-analyze", "verify", f"/{AGENT_UNIT}"],
                           user="root")
        _, verr = await asyncio.to_thread(verify.communicate, timeout=120)
        assert verify.returncode == 0, verr
        assert "diams-agent.service" not in verr, verr
        # restart rules match the agent's exit codes: 2 (bad config/key) never loops, a crash restarts
        text = unit.read_text()
        assert re.search(r"^Restart=on-failure$", text, re.M)
        assert re.search(r"^RestartPreventExitStatus=2$", text, re.M)
        assert re.search(r"^User=diams-agent$", text, re.M)
        assert f"ExecStart={VENV}/bin/diams-agent run --config /etc/diams-agent/agent.toml" in text
        assert "ConfigurationDirectory=" not in text.replace("# No ConfigurationDirectory=", "")

        # the docs' one edit: a stream to publish
        with (target_root / "etc/diams-agent/agent.toml").open("a") as fh:
            fh.write('\n[[streams]]\nname = "telemetry"\nsource = "/proc/loadavg"\ninterval_s = 0.5\n')

        listener, got = await _listener(s)
        exec_start = [f"{VENV}/bin/diams-agent", "run", "--config", "/etc/diams-agent/agent.toml"]
        proc = in_target(target_root, exec_start, env={"DIAMS_BROKER_PORT": str(s.broker.port)})
        try:
            gw = s.gateways["gw-a"]
            topic = topics.verified("gw-a", dev.device_hex, "telemetry").encode()
            ok = await eventually(lambda: any(t == topic for t, _ in got), timeout=60)
            if not ok:
                proc.send_signal(signal.SIGTERM)
                out, err = await asyncio.to_thread(proc.communicate, timeout=20)
                pytest.fail(f"no verified data from the installed agent: {err[-3000:]}")
            assert gw.metrics.get("data_verified") >= 1
            payload = next(p for t, p in got if t == topic)
            assert re.match(rb"^\d+\.\d+ ", payload)  # /proc/loadavg, read by the service user
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(proc.communicate, timeout=20)
            await listener.close()
        assert proc.returncode == 0, err[-3000:]  # SIGTERM: a clean stop, no restart
        assert dev.secret.hex() not in out + err
        state = target_root / "var/lib/diams-agent/state.json"
        assert owner_mode(state)[0] == "diams-agent" and not owner_mode(state)[2] & 0o077

        # a bad configuration exits 2, the status the unit does not restart on
        with (target_root / "etc/diams-agent/agent.toml").open("a") as fh:
            fh.write("\n[broker]\nport = 0\n")
        bad = in_target(target_root, exec_start)
        out, err = await asyncio.to_thread(bad.communicate, timeout=60)
        assert bad.returncode == 2, err[-2000:]


@pytest.mark.timeout(900)  # two installs of the gateway's venv (web3, py-evm, ...) on 2 shared cores
def test_pi_install_gateway_layout(target_root: Path) -> None:
    _require_root_tools()
    require(shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists(), "mosquitto")
    done = install("gateway", "--root", target_root)
    assert done.returncode == 0, done.stdout + done.stderr
    layout = {
        "etc/diams-gateway": ("root", "diams-gateway", 0o750),
        "etc/diams-gateway/gateway.toml": ("root", "diams-gateway", 0o640),
        "etc/diams-gateway/credentials": ("root", "root", 0o700),
        "etc/diams-gateway/credentials/gateway.key": ("root", "root", 0o600),
        "etc/diams-gateway/credentials/broker.password": ("root", "root", 0o600),
        "etc/diams-gateway/credentials/ledger.passphrase": ("root", "root", 0o600),
        "etc/diams-gateway/credentials/ledger.keystore": ("root", "root", 0o600),
        "var/lib/diams-gateway": ("diams-gateway", "diams-gateway", 0o700),
        "var/lib/diams-broker": ("diams-gateway", "mosquitto", 0o750),
        "var/lib/diams-broker/passwords": ("diams-gateway", "mosquitto", 0o640),
        "var/lib/diams-broker/acl": ("diams-gateway", "mosquitto", 0o640),
        "etc/systemd/system/diams-gateway.service": ("root", "root", 0o644),
    }
    for rel, expected in layout.items():
        assert owner_mode(target_root / rel) == expected, rel
    assert "mosquitto" in [g.gr_name for g in grp.getgrall() if "diams-gateway" in g.gr_mem]
    # every LoadCredential= source the unit names was made
    unit = (target_root / "etc/systemd/system/diams-gateway.service").read_text()
    for src in re.findall(r"^LoadCredential=[^:]+:(\S+)$", unit, re.M):
        assert (target_root / src.lstrip("/")).is_file(), src
    verify = in_target(target_root, ["systemd-analyze", "verify", f"/{GATEWAY_UNIT}"],
                       user="root", state="diams-gateway")
    _, verr = verify.communicate(timeout=120)
    assert verify.returncode == 0, verr
    assert "diams-gateway.service" not in verr, verr
    # the installed gateway reads the installed configuration with its credentials; the broker's CA is
    # the site's own (the example config names /etc/diams-gateway/broker-ca.crt): one from a test CA here
    config = target_root / "etc/diams-gateway/gateway.toml"
    ca_file = target_root / "etc/diams-gateway/broker-ca.crt"
    (target_root / "test-ca").mkdir()
    ca_file.write_bytes(make_test_ca(target_root / "test-ca").ca_file.read_bytes())
    config.write_text(config.read_text().replace('"/etc/diams-gateway/broker-ca.crt"', f'"{ca_file}"'))
    check = subprocess.run([str(target_root / VENV.lstrip("/") / "bin/python"), "-m", "gateway.cli",
                            "check-config", "--offline", "--config", str(config)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ,
                                "CREDENTIALS_DIRECTORY": str(target_root / "etc/diams-gateway/credentials")})
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration ok (offline" in check.stdout and "gw-site-1" in check.stdout
    # re-running keeps keys and configuration (never overwrites)
    key_before = (target_root / "etc/diams-gateway/credentials/gateway.key").read_bytes()
    again = install("gateway", "--root", target_root)
    assert again.returncode == 0, again.stderr
    assert (target_root / "etc/diams-gateway/credentials/gateway.key").read_bytes() == key_before
