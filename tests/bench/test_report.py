"""docs/BENCHMARKS.md is rendered from the results and targets, and the committed copy is current."""

from __future__ import annotations

import shutil
import xml.dom.minidom
from pathlib import Path

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[2]


def test_targets_file_loads_and_every_target_is_well_formed() -> None:
    targets = report.load_targets()
    assert "e2e_handshakes_per_s" in targets
    for name, target in targets.items():
        assert name.isidentifier() and target.what, name
        assert target.op in ("<=", ">=", "==")


def test_a_bad_target_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"\[figures.x\]"):
        report.Target("x", {"target": "about 5"})


def test_met_missed_and_unmeasured_targets_are_all_shown() -> None:
    targets = {
        "a_ms": report.Target("a_ms", {"target": "<= 50", "what": "a", "issue": 9}),
        "b_per_s": report.Target("b_per_s", {"target": ">= 100", "what": "b"}),
        "c": report.Target("c", {"target": "== 0", "what": "c"}),
    }
    text = report.render({"a_ms": 60.0, "b_per_s": 150.0}, {}, targets)
    row = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `") and " — " in line}
    assert "**no**" in row["a_ms"] and "#9" in row["a_ms"]
    assert "| yes |" in row["b_per_s"]
    assert "not measured" in row["c"]
    assert "Targets missed: 1 of 2 measured." in text


def test_charts_are_well_formed_svg() -> None:
    svg = report.bar_svg([("a <b>", 3.0), ("c & d", 1.5)], title="t", unit="/s")
    doc = xml.dom.minidom.parseString(svg)
    assert len(doc.getElementsByTagName("rect")) == 3  # background + two bars


def test_committed_benchmarks_md_is_what_the_results_render(tmp_path: Path) -> None:
    plots = tmp_path / "bench"
    shutil.copytree(REPO / "docs" / "bench", plots)
    doc = report.write_report(plots=plots, doc=tmp_path / "BENCHMARKS.md")
    committed = (REPO / "docs" / "BENCHMARKS.md").read_text()
    assert doc.read_text() == committed, "docs/BENCHMARKS.md is stale: run `python -m bench.report`"


def test_the_fleet_sweep_is_drawn_from_the_figures_bench_fleet_measured() -> None:
    results = {
        "fleet_1000_handshakes_per_s": 900.0,
        "fleet_100_handshakes_per_s": 300.0,
        "fleet_100_sim_rss_mb": 60.0,
        "fleet_100_gateway_rss_mb": 90.0,
        "fleet_1000_sim_rss_mb": 80.0,
        "fleet_1000_gateway_rss_mb": 95.0,
        "fleet_largest_ok": 1000.0,
        "sim_rss_mb": 1.0,
    }
    points = report.fleet_points(results)
    assert points == [(100, 300.0, 60.0, 90.0), (1000, 900.0, 80.0, 95.0)]
    doc = xml.dom.minidom.parseString(report.sweep_svg(points))
    assert len(doc.getElementsByTagName("polyline")) == 3  # handshakes/s, simulator RSS, gateway RSS
    assert len(doc.getElementsByTagName("circle")) == 6
    assert report.fleet_points({"sim_rss_mb": 1.0}) == []  # no sweep measured: no picture
