"""The report's arithmetic and files, and the fleet's small parts (pacing, backoff, metrics, identities)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from device_agent.private import KeystoreError
from firmware_sim.fleet import Backoff, FleetStats, Pacer, parse_metrics
from firmware_sim.identities import load_identities, save_identities
from firmware_sim.report import FleetReport, ScenarioResult, histogram_svg, percentiles
from ledger_bridge.enrollment import ProvisionedDevice


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {}
    assert percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0, "max": 3.0}


@pytest.mark.parametrize("values", [[], [0.0], [0.2, 0.3, 5.0, 40.0, 2500.0], [1.0] * 1000])
def test_histogram_is_well_formed_svg(values):
    root = ET.fromstring(histogram_svg(values, title="a <title> & more"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("fill") == "#4a7fb5"]
    counted = sum(int(b.find("{http://www.w3.org/2000/svg}title").text.rsplit(": ", 1)[1]) for b in bars)
    assert counted == len(values)


def test_report_ok_only_when_every_check_held(tmp_path):
    good = ScenarioResult(
        name="steady", devices=2, outcomes=Counter(authenticated=2), latencies_ms=[1.0, 2.0]
    )
    good.check("all devices authenticated", True)
    assert FleetReport(scenarios=[good]).ok
    bad = ScenarioResult(name="clone")
    bad.check("every clone refused as clone", False)
    report = FleetReport(scenarios=[good, bad], seconds=1.5)
    assert not report.ok and "SOME CHECKS FAILED" in report.render()
    assert not ScenarioResult(name="no checks").ok  # a scenario that checked nothing did not pass
    json_path, svg_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["ok"] is False and data["outcomes"] == {"authenticated": 2}
    assert data["scenarios"][1]["checks"] == {"every clone refused as clone": False}
    ET.fromstring(svg_path.read_text())


def test_pacer_spaces_starts_and_backoff_is_full_jitter():
    async def starts() -> list[float]:
        pacer = Pacer(200.0, jitter=0.5, rng=random.Random(1))
        out = []
        for _ in range(40):
            await pacer.wait()
            out.append(time.monotonic())
        return out

    times = asyncio.run(starts())
    assert times[-1] - times[0] >= 39 * 0.005 * 0.5
    rng = random.Random(2)
    b = Backoff(base=1.0, cap=8.0)
    assert all(0 <= b.delay(n, rng) <= min(8.0, 2**n) for n in range(10) for _ in range(50))
    assert max(b.delay(10, rng) for _ in range(200)) > 4.0  # capped, not collapsed


def test_peak_connects_per_second():
    stats = FleetStats(connect_times=[100.1, 100.2, 100.9, 101.5, 103.0])
    assert stats.peak_connects_per_s(since=100.0) == 3
    assert stats.peak_connects_per_s(since=101.0) == 1


def test_parse_metrics_reads_the_gateways_counters():
    text = (
        "# TYPE diams_rejected_total counter\n"
        'diams_rejected_total{reason="bad_otp"} 2\n'
        "diams_authenticated_total 7\n"
        "# HELP diams_devices gauge\n"
        "diams_devices 12.0\n"
    )
    assert parse_metrics(text) == {("rejected", "bad_otp"): 2, ("authenticated", ""): 7}


def test_identities_round_trip_in_a_private_file(tmp_path):
    devices = [
        ProvisionedDevice.generate(model="m", serial=f"S{i}", firmware_hash=hashlib.sha256(b"f").digest())
        for i in range(3)
    ]
    path = tmp_path / "fleet.json"
    save_identities(path, devices)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_identities(path) == devices
    path.chmod(0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_identities(path)


def test_the_gateways_exposition_parses_back():
    """Written and read by prometheus-client: labels with quotes or backslashes survive the trip."""
    from gateway.ops import Metrics

    m = Metrics()
    m.inc("rejected", 'odd "reason"\\', 3)
    m.inc("authenticated", n=5)
    m.gauge("sessions", lambda: 2, "authenticated sessions")
    m.gauge("broken", lambda: 1 / 0, "a gauge that fails is left out, the scrape still works")
    assert parse_metrics(m.render()) == {("rejected", 'odd "reason"\\'): 3, ("authenticated", ""): 5}


@pytest.mark.asyncio
async def test_devices_subscribe_at_the_qos_the_site_asks():
    """A cluster's fleet subscribes at QoS 0 (no durable queue per device on RabbitMQ 3.10); the
    default stays QoS 1; the broker grants what was asked."""
    from firmware_sim.broker import MosquittoBroker, mosquitto_binary
    from firmware_sim.fleet import SiteAccess
    from tests.conftest import require

    require(mosquitto_binary() is not None, "mosquitto")
    ids = [
        ProvisionedDevice.generate(model="m", serial=f"Q{i}", firmware_hash=hashlib.sha256(b"f").digest())
        for i in range(2)
    ]
    with pytest.raises(ValueError, match="subscribe_qos"):
        SiteAccess(host="127.0.0.1", port=1, gateway_id="gw-a", identities=iter(ids)).device(
            ids[0], subscribe_qos=2
        )
    with MosquittoBroker(extra_config=["allow_anonymous true"]) as broker:
        granted = []
        for qos, identity in zip((None, 0), ids, strict=True):
            kw = {} if qos is None else {"subscribe_qos": qos}
            site = SiteAccess(
                host="127.0.0.1", port=broker.port, gateway_id="gw-a", identities=iter(ids), **kw
            )
            dev = site.device(identity)
            await dev.connect(timeout=5)
            granted.append(dev.granted_qos)
            await dev.close()
        assert granted == [[1, 1], [0, 0]]
