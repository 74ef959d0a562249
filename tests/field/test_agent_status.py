"""An agent you can see into: ``diams-agent status``, the Prometheus textfile, JSON logs, and what the
agent says (and how long it waits) when the broker refuses its login - against real Mosquitto and the
gateway daemon."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.agent.keystore import DeviceSecret
from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.observe import snapshot, status_path
from tests import waiting
from tests.agent.helpers import Device, running
from tests.gateway.stack import site
from tests.gateway.test_agents_e2e import _onboard

MAX_COUNTER = 0xFFFFFFFF

# agents reconnect with backoff and share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_agent.agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.asyncio
async def test_status_metrics_and_json_logs_of_the_running_agent(tmp_path: Path) -> None:
    async with site(tmp_path, n_devices=1) as s:
        (tmp_path / "dev").mkdir()
        dev = Device(tmp_path / "dev", serial="STATUS-1")
        await _onboard(s, dev)
        config = str(dev.prov.config_file)
        metrics = tmp_path / "diams-agent.prom"
        before = cli("status", "--config", config)
        assert before.returncode == 3 and "has not run" in before.stderr

        env = {**os.environ, "DIAMS_BROKER_PORT": str(s.broker.port)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "device_agent.agent.cli",
                "--json-logs",
                "run",
                "--config",
                config,
                "--metrics-textfile",
                str(metrics),
                "--status-interval",
                "0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        status_file = status_path(dev.prov.config_file.parent / f"{dev.device_hex}.state.json")
        try:

            def authenticated() -> bool:
                try:
                    return json.loads(status_file.read_text())["state"] == "authenticated"
                except (OSError, ValueError):
                    return False

            assert await eventually(authenticated, timeout=30), proc.poll()
            shown = await asyncio.to_thread(cli, "status", "--config", config)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert "state           authenticated" in shown.stdout and "gateway         gw-a" in shown.stdout
            as_json = json.loads(
                (await asyncio.to_thread(cli, "status", "--config", config, "--json")).stdout
            )
            assert as_json["gateway"] == "gw-a" and as_json["epoch"] == 0 and as_json["fresh"] is True
            assert as_json["counters"]["gw-a/0"]["next"] == 1  # counter 0 was the one handshake
            assert as_json["counter_headroom"] == MAX_COUNTER
            assert as_json["last_refusal"] is None and as_json["stats"]["authenticated"] == 1
            text = metrics.read_text()
            assert f'diams_agent_session_state{{device="{dev.device_hex}",state="authenticated"}} 1' in text
            assert f'diams_agent_counter_headroom{{device="{dev.device_hex}"}} {MAX_COUNTER}' in text
            assert "# TYPE diams_agent_events_total counter" in text
            # the owner suspends the device: the gateway cuts it off and the broker refuses its login
            await s.actors["owner"].suspend(dev.device_id)

            def refused() -> bool:
                st = json.loads(status_file.read_text())
                return st["state"] == "refused_by_broker" and st["last_refusal"]["by"] == "broker"

            assert await eventually(refused, timeout=30), status_file.read_text()
            shown = await asyncio.to_thread(cli, "status", "--config", config)
            assert shown.returncode == 1 and "last refusal    by broker" in shown.stdout, shown.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, err[-2000:]
        lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
        assert {"ts", "level", "logger", "msg"} <= set(lines[0])
        msgs = [r["msg"] for r in lines]
        assert any("authenticated with gw-a" in m for m in msgs)
        assert any("refused the login" in m and "revoked or suspended" in m for m in msgs), msgs
        assert any("long backoff while refused" in m for m in msgs), msgs
        assert dev.secret.hex() not in out + err and dev.secret.hex() not in status_file.read_text()
        stale = cli("status", "--config", config, "--stale-after", "0")
        assert stale.returncode == 3 and "STALE" in stale.stdout


@pytest.mark.asyncio
async def test_a_refused_login_is_said_and_waits_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device the broker does not let in (here: a wrong key) logs why and draws its next delay from
    the long refusal backoff (base = backoff cap), not the reconnect backoff."""
    async with site(tmp_path, n_devices=1) as s:
        (tmp_path / "dev").mkdir()
        dev = Device(tmp_path / "dev", serial="REFUSED-1")
        await _onboard(s, dev)
        config = dev.config(s.broker, backoff_cap_s=30.0, reconnect_base_s=0.2)
        agent = MqttAgent(config, DeviceSecret(os.urandom(32)))
        waits: list[float] = []

        def recording_wait(seconds: float) -> None:
            waits.append(seconds)
            agent.stop()

        agent._wait_refused = recording_wait  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="diams.agent"), running(agent):
            assert await eventually(lambda: bool(waits), timeout=15)
        assert agent.broker_refused
        assert agent.refusals == 1
        assert 0 <= waits[0] <= 30.0  # U(0, base) with base = backoff cap (30 s)
        assert "refused the login" in caplog.text and "long backoff while refused" in caplog.text
        status = snapshot(agent)
        assert status["state"] == "refused_by_broker"
        assert status["last_refusal"]["by"] == "broker" and status["last_refusal"]["reason"]
