"""`diams-sim` against a running site described by a site file (as `make demo` writes it)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from firmware_sim.cli import main
from firmware_sim.identities import save_identities
from tests.gateway.stack import site

pytestmark = pytest.mark.asyncio


async def test_cli_runs_scenarios_reports_and_takes_fresh_identities(tmp_path, capsys):
    async with site(tmp_path, n_devices=12) as s:
        save_identities(tmp_path / "spare.json", s.devices)
        password = tmp_path / "observer.password"
        password.write_text(s.actors["broker-gw-a"])
        os.chmod(password, 0o600)
        site_file = tmp_path / "site.json"
        site_file.write_text(
            json.dumps(
                {
                    "broker": {"host": "127.0.0.1", "port": s.broker.port},
                    "gateway_id": "gw-a",
                    "observer": {"username": "gateway-gw-a.1", "password_file": str(password)},
                    "identities": str(tmp_path / "spare.json"),
                }
            )
        )
        argv = ["--site", str(site_file), "--devices", "3", "--seconds", "1", "--report", str(tmp_path / "r")]
        rc = await asyncio.to_thread(main, [*argv, "steady", "firmware_mismatch", "counter_window"])
        out = capsys.readouterr().out
        assert rc == 0, out
        # counter_window: the jumped counters are accepted now (its checks are in ALL CHECKS HELD)
        assert "ALL CHECKS HELD" in out and "bad_otp 2" in out
        assert (tmp_path / "spare.used").read_text().strip() == "7"
        report = json.loads((tmp_path / "r" / "report.json").read_text())
        assert [x["name"] for x in report["scenarios"]] == ["steady", "firmware_mismatch", "counter_window"]
        # a second run takes the next identities; asking for more than are left is a usage error
        assert await asyncio.to_thread(main, [*argv, "steady"]) == 0
        assert await asyncio.to_thread(main, [*argv, "steady", "steady"]) == 2
        # a scenario the site cannot support is a failed check, not a crash
        assert await asyncio.to_thread(main, [*argv[:2], "--devices", "1", "broker_restart"]) == 1
