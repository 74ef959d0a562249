"""docs/BENCHMARKS.md, written by `make bench` from bench/results.json and bench/targets.toml.

Strategy: the report is a pure function of three inputs — the figures, the run's metadata (machine,
which module measured which figure, when) and the targets — so a test can render it from fixed inputs
and the committed document can always be regenerated (`python -m bench.report`). Plots are SVG files
under docs/bench/: bar charts drawn here from the figures, and histograms that benchmarks save from
their raw samples with ``save_histogram``. Nothing in the document is typed by hand.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from firmware_sim.report import histogram_svg

__all__ = ["Target", "load_targets", "machine_info", "render", "save_histogram", "write_report"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.json"
META = HERE / "results.meta.json"
TARGETS = HERE / "targets.toml"
DOC = REPO / "docs" / "BENCHMARKS.md"
PLOTS = REPO / "docs" / "bench"

# Figures drawn side by side in the comparison charts, when measured (label, figure).
THROUGHPUT = [
    ("gateway role alone, one core", "gateway_core_handshakes_per_s"),
    ("Mosquitto request/response ceiling", "mqtt_rr_ceiling_per_s"),
    ("DIAMS end to end, plain MQTT", "e2e_handshakes_per_s"),
    ("DIAMS end to end, TLS", "e2e_handshakes_per_s_tls"),
    ("DIAMS on a 3-node RabbitMQ cluster", "cluster_e2e_handshakes_per_s"),
    ("Mosquitto TLS client certificates (connects)", "peer_mtls_connects_per_s"),
    ("Mosquitto TLS + password file (connects)", "peer_tls_password_connects_per_s"),
]
LATENCY = [
    ("e2e p50, paced", "e2e_handshake_p50_ms"),
    ("e2e p99, paced", "e2e_handshake_p99_ms"),
    ("e2e p99, saturated", "e2e_saturated_p99_ms"),
    ("victim p99 under data flood", "victim_handshake_p99_ms_under_data_flood"),
    ("mTLS connect p99", "peer_mtls_p99_ms"),
]


class Target:
    """One target: ``"<= 50"``, ``">= 0.7"`` or ``"== 0"`` on a named figure."""

    def __init__(self, figure: str, spec: Mapping[str, Any]) -> None:
        op, _, number = str(spec["target"]).partition(" ")
        if op not in ("<=", ">=", "==") or not number:
            raise ValueError(f"targets.toml: [figures.{figure}] target must be '<= N', '>= N' or '== N'")
        self.figure = figure
        self.op = op
        self.bound = float(number)
        self.what = str(spec.get("what", ""))
        self.issue = spec.get("issue")
        self.reference = spec.get("reference")
        self.ratio = spec.get("ratio")

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.bound
        if self.op == ">=":
            return value >= self.bound
        return value == self.bound

    def __str__(self) -> str:
        return f"{self.op} {_fmt(self.bound)}"


def load_targets(path: Path = TARGETS) -> dict[str, Target]:
    data = tomllib.loads(path.read_text())
    return {name: Target(name, spec) for name, spec in data.get("figures", {}).items()}


def _run(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def machine_info() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "mosquitto": _run(mosquitto, "-h").splitlines()[0] if Path(mosquitto).exists() else "not installed",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def bar_svg(items: Sequence[tuple[str, float]], *, title: str, unit: str) -> str:
    """A standalone SVG: horizontal bars, one per (label, value), with the value written at the end."""
    width, row, left, top = 760, 26, 300, 40
    height = top + row * max(1, len(items)) + 30
    peak = max((v for _, v in items), default=1.0) or 1.0
    plot_w = width - left - 110
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = plot_w * value / peak
        out.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" fill="#4a7fb5"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{escape(_fmt(value))} {escape(unit)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def sweep_svg(points: list[tuple[int, float, float, float]]) -> str:
    """Two panels over fleet size (log scale): handshakes/s, and simulator and gateway RSS (MB)."""
    width, height, pad = 720, 300, 50
    panel = (width - 3 * pad) // 2
    xs = [math.log10(n) for n, *_ in points]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def px(n: int, i: int) -> float:
        return pad + i * (panel + pad) + (math.log10(n) - x_lo) / (x_hi - x_lo) * panel

    def py(v: float, top: float) -> float:
        return height - pad - v / (top or 1) * (height - 2 * pad)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{pad}" y="18" font-size="13">Handshakes/s and memory against fleet size (log x)</text>',
    ]
    series = [
        (0, "handshakes/s", [(n, h) for n, h, _, _ in points], "#2b6cb0"),
        (1, "simulator RSS MB", [(n, s) for n, _, s, _ in points], "#c05621"),
        (1, "gateway RSS MB", [(n, g) for n, _, _, g in points], "#2f855a"),
    ]
    tops = {0: max(h for _, h, _, _ in points) * 1.1, 1: max(max(s, g) for _, _, s, g in points) * 1.1}
    for i in (0, 1):
        x0 = pad + i * (panel + pad)
        out.append(
            f'<line x1="{x0}" y1="{height - pad}" x2="{x0 + panel}" y2="{height - pad}" stroke="#333"/>'
        )
        out.append(f'<line x1="{x0}" y1="{pad}" x2="{x0}" y2="{height - pad}" stroke="#333"/>')
        out.append(f'<text x="{x0 - 4}" y="{pad - 4}" text-anchor="start">{tops[i]:,.0f}</text>')
        for n, *_ in points:
            out.append(f'<text x="{px(n, i):.0f}" y="{height - pad + 14}" text-anchor="middle">{n:,}</text>')
    for k, (i, label, pts, colour) in enumerate(series):
        path = " ".join(f"{px(n, i):.1f},{py(v, tops[i]):.1f}" for n, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in pts:
            out.append(f'<circle cx="{px(n, i):.1f}" cy="{py(v, tops[i]):.1f}" r="3" fill="{colour}"/>')
        x0 = pad + i * (panel + pad)
        out.append(f'<text x="{x0 + 8}" y="{pad + 14 + 14 * (k - i)}" fill="{colour}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def fleet_points(results: Mapping[str, float]) -> list[tuple[int, float, float, float]]:
    """(N, handshakes/s, simulator RSS MB, gateway RSS MB) for each fleet size ``bench_fleet`` measured."""
    sizes = sorted(
        int(name.split("_")[1])
        for name in results
        if name.startswith("fleet_") and name.endswith("_handshakes_per_s") and name.split("_")[1].isdigit()
    )
    return [
        (
            n,
            float(results[f"fleet_{n}_handshakes_per_s"]),
            float(results.get(f"fleet_{n}_sim_rss_mb", 0.0)),
            float(results.get(f"fleet_{n}_gateway_rss_mb", 0.0)),
        )
        for n in sizes
    ]


def save_histogram(name: str, values_ms: Sequence[float], *, title: str, plots: Path = PLOTS) -> Path:
    """For benchmarks: keep a latency histogram of raw samples as docs/bench/<name>.svg."""
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / f"{name}.svg"
    path.write_text(histogram_svg(values_ms, title=title))
    return path


def render(
    results: Mapping[str, float],
    meta: Mapping[str, Any],
    targets: Mapping[str, Target],
    plots: Sequence[tuple[str, str]] = (),
) -> str:
    """The whole document, from its inputs."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/report.py`) from `bench/results.json` and `bench/targets.toml`;",
        "do not edit by hand. Every figure was measured by the module named next to it, in the run",
        "described under *Machine*. `BENCH_ONLY=name make bench` re-measures one module and rewrites",
        "this file.",
        "",
        "## Targets",
        "",
        "| figure | measured | target | met | reference (same run) | issue |",
        "|---|---:|---|---|---|---|",
    ]
    missed = 0
    for name, target in targets.items():
        value = results.get(name)
        if value is None:
            shown, met = "not measured", "—"
        else:
            shown = _fmt(value)
            ok = target.met(value)
            met = "yes" if ok else "**no**"
            missed += not ok
        ref = ""
        if target.reference and target.reference in results:
            ref = f"`{target.reference}` {_fmt(results[target.reference])}"
            if target.ratio and target.ratio in results:
                ref += f" (`{target.ratio}` {_fmt(results[target.ratio])})"
        lines.append(
            f"| `{name}` — {target.what} | {shown} | {target} | {met} | {ref} | "
            f"{'#' + str(target.issue) if target.issue else ''} |"
        )
    lines += ["", f"Targets missed: {missed} of {sum(1 for n in targets if n in results)} measured.", ""]

    lines += ["## Compared side by side", ""]
    for picture, caption in plots:
        lines += [f"![{caption}]({picture})", ""]

    modules: Mapping[str, Any] = meta.get("modules", {})
    owner = {fig: mod for mod, info in modules.items() for fig in info.get("figures", [])}
    lines += ["## Every figure", "", "| figure | value | measured by | when |", "|---|---:|---|---|"]
    for name in sorted(results):
        mod = owner.get(name, "")
        when = modules.get(mod, {}).get("at", "") if mod else ""
        lines.append(f"| `{name}` | {_fmt(results[name])} | {mod or 'an earlier run'} | {when} |")

    machine: Mapping[str, str] = meta.get("machine", {})
    lines += ["", "## Machine", ""]
    if machine:
        lines += [f"- {key}: {value}" for key, value in machine.items()]
    else:
        lines.append("- not recorded")
    lines.append("")
    return "\n".join(lines)


def write_report(
    results_path: Path = RESULTS, meta_path: Path = META, doc: Path = DOC, plots: Path = PLOTS
) -> Path:
    """Render docs/BENCHMARKS.md and its bar charts from the files on disk."""
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    plots.mkdir(parents=True, exist_ok=True)
    pictures: list[tuple[str, str]] = []
    rel = os.path.relpath(plots, doc.parent)
    for stem, title, unit, spec in (
        ("throughput", "Authentications per second, same machine", "/s", THROUGHPUT),
        ("latency", "Handshake latency, same machine", "ms", LATENCY),
    ):
        items = [(label, float(results[fig])) for label, fig in spec if fig in results]
        if items:
            (plots / f"{stem}.svg").write_text(bar_svg(items, title=title, unit=unit))
            pictures.append((f"{rel}/{stem}.svg", title))
    points = fleet_points(results)
    if points:
        (plots / "fleet_sweep.svg").write_text(sweep_svg(points))
        pictures.append((f"{rel}/fleet_sweep.svg", "Handshakes/s and memory against fleet size"))
    for svg in sorted(plots.glob("*.svg")):
        if svg.stem not in ("throughput", "latency", "fleet_sweep"):
            pictures.append((f"{rel}/{svg.name}", svg.stem.replace("_", " ")))
    doc.write_text(render(results, meta, load_targets(), pictures))
    return doc


if __name__ == "__main__":
    print(write_report())
