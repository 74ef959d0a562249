"""Operating the gateway: the CLI, health endpoints over HTTP, sd_notify on a real socket, audit anchoring
on a real EVM, secrets kept out of logs, and the systemd unit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from device_agent.core import events
from gateway.audit import AuditLog, anchor_records, check_anchors, verify_file
from gateway.cli import main
from gateway.ops import parse_counters
from ledger_bridge import LedgerError
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.sealing import load_gateway_key, public_bytes
from tests.conftest import require
from tests.gateway.stack import site
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "diams-gateway.service"
EXAMPLE = ROOT / "systemd" / "gateway.example.toml"


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """``main()`` installs its own root handler on the (captured) stderr; later tests must not log to it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# ---- diams-gateway keys / check-config -----------------------------------------------------------------


def test_keys_writes_0600_files_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    key, password = out / "gateway.key", out / "broker.password"
    for path in (key, password):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert printed["x25519_public_key"] == public_bytes(load_gateway_key(key).public_key()).hex()
    assert len(password.read_text()) >= 32
    before = key.read_bytes(), password.read_bytes()
    assert main(["keys", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (key.read_bytes(), password.read_bytes()) == before


def test_check_config_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    for name in ("gateway.key", "broker.password", "ledger.keystore", "ledger.passphrase"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).chmod(0o600)
    # the files are opened as `run` opens them: a 1-byte key is no X25519 key (the whole preflight
    # against a real ledger is in test_preflight.py)
    assert main(["check-config", "--config", str(EXAMPLE)]) == 2
    assert "key_file: " in (err := capsys.readouterr().err) and "holds 1 bytes" in err
    # the secret files are checked too: readable, and by nobody else
    (tmp_path / "broker.password").chmod(0o644)
    assert main(["check-config", "--config", str(EXAMPLE)]) == 2
    assert "broker.password_file: " in (err := capsys.readouterr().err) and "chmod 600" in err
    (tmp_path / "broker.password").chmod(0o600)
    (tmp_path / "ledger.keystore").unlink()
    assert main(["check-config", "--config", str(EXAMPLE)]) == 2
    assert "ledger.keystore: cannot read" in capsys.readouterr().err
    (tmp_path / "ledger.keystore").write_bytes(b"x")
    (tmp_path / "ledger.keystore").chmod(0o600)
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("port = 8883", "port = 99999"))
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "configuration error: broker.port must be 1..65535, got 99999" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    monkeypatch.setenv("DIAMS_GATEWAY_GATEWAY_ID", "Not Valid")
    assert main(["check-config", "--config", str(EXAMPLE)]) == 2
    assert "gateway_id must be" in capsys.readouterr().err
    monkeypatch.delenv("DIAMS_GATEWAY_GATEWAY_ID")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert main(["check-config", "--config", str(EXAMPLE)]) == 2
    assert "needs $CREDENTIALS_DIRECTORY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--bogus"])
    assert info.value.code == 2


# ---- diams-gateway audit verify -------------------------------------------------------------------------


def _log_with_anchor(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(5):
        log.append("authenticated", device=f"{i:016x}", counter=i)
    anchor = log.next_anchor()
    assert anchor is not None
    log.mark_anchored(anchor, "0x" + "ab" * 32)
    log.append("cut_off", device="0000000000000001")
    log.close()
    return tmp_path / "audit.log"


def _rewrite_chain(path: Path, edit: dict[str, object]) -> None:
    """What an attacker with write access does: change record 2 and recompute every hash after it."""
    from gateway.audit import GENESIS, _digest

    lines = [json.loads(x) for x in path.read_text().splitlines()]
    prev = GENESIS
    for rec in lines:
        rec.pop("hash")
        if rec["seq"] == 2:
            rec.update(edit)
        rec["prev"] = prev
        rec["hash"] = prev = _digest(prev, rec)
    path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in lines))


def test_audit_verify_good_and_tampered_logs(tmp_path, capsys):
    path = _log_with_anchor(tmp_path)
    assert main(["audit", "verify", str(path)]) == 0
    assert "audit log valid: 6 records" in capsys.readouterr().out
    assert main(["audit", "verify", str(path), "--anchors"]) == 0
    out = capsys.readouterr().out
    assert "anchor 1..5" in out and ": ok" in out and "1 records not anchored yet" in out

    # an edit in place breaks the chain at that line
    altered = tmp_path / "altered"
    altered.mkdir()
    shutil.copy(path, altered / "audit.log")
    text = (altered / "audit.log").read_text()
    (altered / "audit.log").write_text(text.replace('"counter":2', '"counter":7'))
    assert main(["audit", "verify", str(altered / "audit.log")]) == 1
    assert "record 3 was altered" in capsys.readouterr().err

    # a removed record breaks the chain at the next one
    removed = tmp_path / "removed"
    removed.mkdir()
    lines = path.read_text().splitlines(keepends=True)
    (removed / "audit.log").write_text("".join(lines[:1] + lines[2:]))
    assert main(["audit", "verify", str(removed / "audit.log")]) == 1
    assert "chain broken" in capsys.readouterr().err

    # a consistently rewritten chain verifies, but no longer matches its anchor
    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copy(path, forged / "audit.log")
    shutil.copy(path.with_name("audit.log.anchors"), forged / "audit.log.anchors")
    _rewrite_chain(forged / "audit.log", {"device": "ffffffffffffffff"})
    assert main(["audit", "verify", str(forged / "audit.log")]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(forged / "audit.log"), "--anchors"]) == 1
    assert "MISMATCH: the log no longer matches the local anchor record" in capsys.readouterr().out


def test_audit_verify_of_a_missing_file_fails(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "none.log")]) == 1
    assert "NOT valid" in capsys.readouterr().err


# ---- a running gateway: HTTP endpoints, sd_notify, anchoring, logs ---------------------------------------


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


@pytest.mark.asyncio
async def test_health_ready_and_metrics_over_http(tmp_path):
    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        assert gw.health is not None and gw.health.port > 0
        port = gw.health.port
        assert await asyncio.to_thread(_get, port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(_get, port, "/readyz") == (200, "ready\n")
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        status, text = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200
        assert "# TYPE diams_authenticated_total counter\ndiams_authenticated_total 1.0\n" in text
        assert "# TYPE diams_sessions gauge\ndiams_sessions 1.0\n" in text
        assert parse_counters(text)[("authenticated", "")] == 1  # what the simulator reads
        for gauge in ("pending_handshakes", "devices_servable", "index_staleness_seconds"):
            assert re.search(rf"^diams_{gauge} [0-9.e+-]+$", text, re.M), gauge
        assert "diams_mqtt_connects_total 1.0" in text
        await dev.close()

        # the broker goes away: not ready (503, with the reason), still alive; back when it returns
        s.broker.stop()

        async def not_ready() -> bool:
            return (await asyncio.to_thread(_get, port, "/readyz"))[0] == 503

        assert await eventually(not_ready, 10)
        assert await asyncio.to_thread(_get, port, "/readyz") == (503, "broker: not connected\n")
        assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
        s.broker.start()

        async def ready() -> bool:
            return (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200

        assert await eventually(ready, 20)
        assert await asyncio.to_thread(_get, port, "/nowhere") == (404, "404: Not Found")


@pytest.mark.asyncio
async def test_sd_notify_ready_watchdog_and_stopping_on_a_real_socket(tmp_path, monkeypatch):
    with tempfile.TemporaryDirectory(prefix="sd", dir="/tmp") as d:  # AF_UNIX paths are short
        address = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a ping every 0.1 s
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        got: list[str] = []

        def drain() -> list[str]:
            while True:
                try:
                    got.append(sock.recv(4096).decode())
                except BlockingIOError:
                    return got

        try:
            async with site(tmp_path, n_devices=1):
                # READY=1 once connected and subscribed (watchdog pings may precede it)
                assert [m for m in drain() if m != "WATCHDOG=1"] == ["READY=1"], got
                assert await eventually(lambda: drain().count("WATCHDOG=1") >= 3, 10), got
                assert "STOPPING=1" not in got
            assert drain()[-1] == "STOPPING=1"
            assert got.count("READY=1") == 1
        finally:
            sock.close()


@pytest.mark.asyncio
async def test_anchor_puts_the_merkle_root_on_chain_and_a_tampered_log_no_longer_matches(tmp_path, capsys):
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        for i in range(2):
            dev = s.sim(i)
            await dev.connect()
            assert isinstance(await dev.authenticate(), events.Authenticated)
            await dev.close()
        log = gw.settings.state_dir / "audit.log"
        count = gw.audit.seq
        assert count >= 2
        tx = await gw.anchor_now()
        assert tx is not None and tx.startswith("0x")
        [record] = anchor_records(log)
        root = bytes.fromhex(record["root"])
        on_chain = await s.ledger.anchor(root, gateway_id=onchain_gateway_id(b"gw-a"))
        assert (on_chain.count, on_chain.first_seq, on_chain.last_seq) == (count, 1, count)
        assert on_chain.gateway_id == onchain_gateway_id(b"gw-a") and on_chain.block_number > 0
        assert gw.metrics.get("anchors") == 1
        assert await gw.anchor_now() is None  # nothing new: no transaction

        gw.audit.append("operator_note", note="second batch")
        assert await gw.anchor_now() is not None
        second = anchor_records(log)[1]
        assert (second["first_seq"], second["last_seq"], second["count"]) == (count + 1, count + 1, 1)

        gid = onchain_gateway_id(b"gw-a")
        checks = await check_anchors(log, s.ledger, gateway_id=gid)
        assert [(c.on_chain, c.problem) for c in checks] == [(True, ""), (True, "")]
        assert [c.root for c in checks] == [record["root"], second["root"]]

        # an attacker rewrites the log *and* its hash chain and sidecar: the chain refuses the new root
        forged = tmp_path / "forged"
        forged.mkdir()
        shutil.copy(log, forged / "audit.log")
        _rewrite_chain(forged / "audit.log", {"event": "rejected"})
        count_, _ = verify_file(forged / "audit.log")  # the hash chain alone is consistent again
        assert count_ == count + 1
        lines = [json.loads(x) for x in log.with_name("audit.log.anchors").read_text().splitlines()]
        from gateway.audit import batch_root

        _, new_root = batch_root(forged / "audit.log", 1, count)
        lines[0]["root"] = new_root.hex()
        (forged / "audit.log.anchors").write_text("".join(json.dumps(x) + "\n" for x in lines))
        with pytest.raises(LedgerError):
            await s.ledger.anchor(new_root, gateway_id=gid)
        checks = await check_anchors(forged / "audit.log", s.ledger, gateway_id=gid)
        assert [c.on_chain for c in checks] == [True, True, False]
        assert "does not reproduce the root anchored on chain" in checks[0].problem
        # every later record's hash changed with it, so every later anchor fails too
        assert "does not reproduce the root anchored on chain" in checks[1].problem
        assert "the sidecar names a root this gateway never anchored" in checks[2].problem
        # and the records anchored by another gateway are not taken for this one's
        checks = await check_anchors(log, s.ledger, gateway_id=onchain_gateway_id(b"gw-other"))
        assert checks and all("never anchored on chain" in c.problem for c in checks)


@pytest.mark.asyncio
async def test_an_anchor_whose_sidecar_line_cannot_be_written_neither_kills_nor_stalls_anchoring(
    tmp_path, monkeypatch
):
    """Found by the campaign: a full disk made the sidecar write raise inside the anchor loop and the
    gateway died; and a sidecar missing an anchor that is on chain made every later anchor revert."""
    import errno

    import gateway.audit as audit_mod

    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:  # only the sidecar's file system is full
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".anchors"):
            return real_write(fd, data)
        real_write(fd, bytes(data)[:7])  # a partial line reaches the file before the error...
        raise OSError(errno.ENOSPC, "No space left on device")

    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        gid = onchain_gateway_id(b"gw-a")
        log = gw.settings.state_dir / "audit.log"
        gw.audit.append("operator_note", note="first batch")
        monkeypatch.setattr(audit_mod.os, "write", full_disk)
        assert await gw.anchor_now() is not None  # on chain; the gateway goes on
        assert gw.metrics.get("audit_unavailable", "anchor") == 1
        sidecar = log.with_name("audit.log.anchors")
        assert not sidecar.exists() or sidecar.read_bytes() == b""  # ...and was cut off again
        monkeypatch.setattr(audit_mod.os, "write", real_write)
        gw.audit.append("operator_note", note="second batch")
        assert await gw.anchor_now() is not None  # starts after the first anchor, not at record 1
        # a gateway started later reads the sidecar, which lacks the first anchor: the chain says more
        gw.audit.append("operator_note", note="third batch")
        gw.audit.close()
        gw.audit = gw.traffic.audit = restarted = AuditLog(log)
        gw._anchors_reconciled = False
        try:
            assert gw.audit.anchored_seq == 2
            assert await gw.anchor_now() is not None
            checks = await check_anchors(log, s.ledger, gateway_id=gid)
        finally:
            restarted.close()
        assert [(c.on_chain, c.problem) for c in checks] == [(True, "")] * 3
        assert [(c.first_seq, c.last_seq) for c in checks] == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.asyncio
async def test_no_secret_reaches_the_logs_of_a_full_run(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with site(tmp_path, n_devices=2) as s:
        gw = s.gateways["gw-a"]
        dev, other = s.sim(0), s.sim(1)
        for d in (dev, other):
            await d.connect()
            assert isinstance(await d.authenticate(), events.Authenticated)
        dev.send_data("telemetry", b"21.5")
        dev.client.publish(dev.up, b"\x11garbage", qos=1)  # a refused message is logged too
        assert gw.traffic.send_command(dev.device_id, "config", b"interval=60")
        # all three handled (and logged) before the revocation
        assert await eventually(lambda: gw.metrics.get("data_verified") == 1)
        assert await eventually(lambda: gw.metrics.get("rejected", "bad_message") == 1)
        assert await eventually(lambda: dev.stats.commands == [b"interval=60"])
        await s.actors["owner"].revoke(other.device_id)
        await asyncio.wait_for(asyncio.shield(other.client.closed), 5)
        await gw.anchor_now()
        await dev.close()
        secrets = {
            "gateway broker password": s.actors["broker-gw-a"],
            "gateway private key": (tmp_path / "gw-a.key").read_bytes().hex(),
        }
        for name, d in (("dev", dev), ("other", other)):
            secrets[f"{name} secret"] = d.identity.secret.hex()
            secrets[f"{name} broker password"] = d.identity.broker_password(0)
            secrets[f"{name} gateway key"] = d._key().hex()
        audit = (gw.settings.state_dir / "audit.log").read_text()
    logged = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert len(caplog.records) >= 3, logged  # the run did log (at DEBUG and up: every level captured)
    for name, value in secrets.items():
        assert value, name
        for text, where in ((logged, "logs"), (audit, "audit log")):
            assert value not in text and value.upper() not in text, f"{name} appears in the {where}"
            assert repr(value)[1:-1] not in text


# ---- the systemd unit ------------------------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_declares_notify_watchdog_user_credentials_and_hardening():
    u = _unit()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "User": "diams-gateway", "DynamicUser": "no",
        "StateDirectory": "diams-gateway", "ConfigurationDirectory": "diams-gateway", "UMask": "0077",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "LockPersonality": "yes",
        "RestrictRealtime": "yes", "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "ProtectClock": "yes", "ProtectHostname": "yes", "RemoveIPC": "yes", "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert u.get(key) == [value], (key, u.get(key))
    assert "@system-service" in u["SystemCallFilter"]
    assert re.fullmatch(r"\d+s", u["WatchdogSec"][0])
    creds = dict(c.split(":", 1) for c in u["LoadCredential"])
    assert {"gateway.key", "broker.password"} <= set(creds)
    # the example config reads exactly those credentials
    example = EXAMPLE.read_text()
    for name in creds:
        assert f'"credential:{name}"' in example, name


def _systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


def test_unit_passes_systemd_analyze_verify(tmp_path):
    tool = _systemd_analyze()
    require(tool is not None, "systemd-analyze")
    assert tool is not None
    # verify checks that ExecStart exists: point it at this checkout's entry point
    exe = Path(sys.executable).with_name("diams-gateway")
    require(exe.exists(), "the diams-gateway entry point (pip install -e .)")
    unit = tmp_path / "diams-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/diams/.venv/bin/diams-gateway", str(exe)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "diams-gateway.service" not in done.stderr, done.stderr


def test_unit_exposure_score_stays_low(tmp_path):
    tool = _systemd_analyze()
    require(tool is not None, "systemd-analyze")
    assert tool is not None
    unit = tmp_path / "diams-gateway.service"
    shutil.copy(UNIT, unit)
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    found = re.search(r"Overall exposure level for diams-gateway\.service: (\d+\.\d)", done.stdout)
    require(found is not None, "systemd-analyze security --offline (systemd >= 252)")
    assert found is not None
    assert float(found.group(1)) <= 2.0, done.stdout[-3000:]  # docs/GATEWAY.md records 1.5


MDWE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory was still allowed")
except PermissionError:
    pass
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_a_full_handshake_runs_without_writable_executable_memory():
    """MemoryDenyWriteExecute=yes: the kernel's PR_SET_MDWE refuses W+X mappings the same way; the
    daemon test (cryptography, coincurve, pycryptodome, py-evm, aiohttp) must pass under it."""
    done = subprocess.run(
        [sys.executable, "-c", MDWE, "-q", "-p", "no:cacheprovider",
         "tests/gateway/test_daemon.py::test_handshake_data_and_policy"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    require(done.returncode != 77, "PR_SET_MDWE (Linux >= 6.3)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_command_reloader_runs_the_command_and_reports_failures_in_words(tmp_path):
    from gateway.broker import ReloadFailed
    from gateway.service import command_reloader

    marker = tmp_path / "reloaded"
    command_reloader(["touch", str(marker)])()
    assert marker.exists()
    with pytest.raises(ReloadFailed, match=r"exited 1"):
        command_reloader([sys.executable, "-c", "import sys; sys.exit('polkit said no')"])()
    with pytest.raises(ReloadFailed, match=r"reload command /nonexistent/systemctl failed"):
        command_reloader(["/nonexistent/systemctl"])()


def test_audit_verify_with_config_finds_the_anchors_on_the_ledger(tmp_path, capsys):
    """End to end through the CLI: a log anchored on an embedded chain, then checked against that chain."""
    from ledger_bridge import Ledger, Role, Signer
    from ledger_bridge.embedded import EmbeddedBackend
    from ledger_bridge.sealing import generate_gateway_key

    chain, state = tmp_path / "chain.sqlite", tmp_path / "state"
    state.mkdir()
    key = generate_gateway_key(tmp_path / "gw.key")

    async def anchor_on_chain():
        admin, operator, account = (Signer.generate(label=n) for n in ("admin", "operator", "gw"))
        async with Ledger(backend=EmbeddedBackend(chain)) as ledger:
            for s in (admin, operator, account):
                await ledger.fund(s.address, 10**18)
            channel = await ledger.deploy(admin=admin)
            await ledger.actor(admin).grant_role(Role.OPERATOR, operator.address)
            gid = onchain_gateway_id(b"gw-e2e")
            await ledger.actor(operator).register_gateway(gid, x25519_public_key=key, account=account.address)
            log = AuditLog(state / "audit.log")
            for batch in range(2):
                for i in range(3):
                    log.append("authenticated", device=f"{batch:08x}{i:08x}")
                a = log.next_anchor()
                assert a is not None
                tx = await ledger.actor(account).anchor(
                    gid, merkle_root=a.root, count=a.count, first_seq=a.first_seq, last_seq=a.last_seq
                )
                log.mark_anchored(a, tx.transaction_hash)
            log.append("cut_off", device="0000000000000001", block=1)
            log.close()
            return channel

    channel = asyncio.run(anchor_on_chain())
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'gateway_id = "gw-e2e"\nstate_dir = "{state}"\nkey_file = "{tmp_path / "gw.key"}"\n'
        f'[ledger]\nmode = "embedded"\npath = "{chain}"\nregistry = "{channel.registry}"\n'
        f'auth_log = "{channel.auth_log}"\ndeployed_block = {channel.deployed_block}\n'
    )
    path = state / "audit.log"
    assert main(["audit", "verify", str(path), "--anchors", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok on chain") == 2 and "2 of 2 anchors match on chain" in out
    assert "1 records not anchored yet" in out

    shutil.copy(path, state / "good.log")
    _rewrite_chain(path, {"device": "ffffffffffffffff"})  # consistent chain, sidecar untouched
    assert main(["audit", "verify", str(path)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--anchors", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.count("the log does not reproduce the root anchored on chain") == 2
    assert "0 of 2 anchors match on chain" in out

    # regression (issue 10): the sidecar emptied, then removed: the chain still lists both batches
    sidecar = path.with_name("audit.log.anchors")
    for tamper in (lambda: sidecar.write_text(""), sidecar.unlink):
        tamper()
        assert main(["audit", "verify", str(path), "--anchors", "--config", str(config)]) == 1
        out = capsys.readouterr().out
        assert out.count("the log does not reproduce the root anchored on chain") == 2, out
        assert "0 of 2 anchors match on chain" in out

    # a log cut short before the anchored records end fails too, whatever its own chain says
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]))
    assert main(["audit", "verify", str(path)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--anchors", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "the log ends at record 4, before this anchored batch ends" in out

    # a sidecar naming a root the gateway never anchored is reported, not trusted
    shutil.copy(state / "good.log", path)
    sidecar.write_text(json.dumps({"first_seq": 7, "last_seq": 7, "count": 1, "root": "ab" * 32}) + "\n")
    assert main(["audit", "verify", str(path), "--anchors", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 anchors match on chain" in out
    assert "the sidecar names a root this gateway never anchored on chain" in out
