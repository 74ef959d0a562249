"""The simulator's report: outcomes by reason, latency percentiles, a JSON file and an SVG histogram.

The histogram is hand-written SVG (no plotting library): log-spaced bins, because handshake latencies
span from a fraction of a millisecond on loopback to seconds under load or after a broker restart.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["FleetReport", "ScenarioResult", "histogram_svg", "percentiles"]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max (nearest-rank) in the values' unit; empty input -> {}."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return {
        "p50": round(rank(50), 3),
        "p90": round(rank(90), 3),
        "p99": round(rank(99), 3),
        "max": round(ordered[-1], 3),
    }


@dataclass
class ScenarioResult:
    """What one scenario did and whether it ended as it must (``ok``), with the reason in ``checks``."""

    name: str
    devices: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "authenticated" or a refusal reason
    latencies_ms: list[float] = field(default_factory=list)
    messages_sent: int = 0
    messages_verified: int | None = None  # None when no observer could see the verified stream
    checks: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def check(self, name: str, held: bool) -> bool:
        self.checks[name] = bool(held)
        return held

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "devices": self.devices,
            "outcomes": dict(sorted(self.outcomes.items())),
            "latency_ms": percentiles(self.latencies_ms),
            "messages_sent": self.messages_sent,
            "messages_verified": self.messages_verified,
            "checks": self.checks,
            "figures": self.figures,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class FleetReport:
    scenarios: list[ScenarioResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.scenarios) and all(s.ok for s in self.scenarios)

    def latencies_ms(self) -> list[float]:
        return [x for s in self.scenarios for x in s.latencies_ms]

    def to_json(self) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for s in self.scenarios:
            totals.update(s.outcomes)
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "outcomes": dict(sorted(totals.items())),
            "latency_ms": percentiles(self.latencies_ms()),
            "scenarios": [s.to_json() for s in self.scenarios],
        }

    def write(self, directory: Path) -> tuple[Path, Path]:
        """-> (report.json, latency.svg) written into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        json_path, svg_path = directory / "report.json", directory / "latency.svg"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        svg_path.write_text(histogram_svg(self.latencies_ms(), title="handshake latency (ms)"))
        return json_path, svg_path

    def render(self) -> str:
        """A plain-text summary for the terminal."""
        lines = []
        for s in self.scenarios:
            mark = "ok  " if s.ok else "FAIL"
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items())) or "-"
            lat = percentiles(s.latencies_ms)
            lat_text = f"  p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms" if lat else ""
            msgs = ""
            if s.messages_sent:
                seen = "?" if s.messages_verified is None else str(s.messages_verified)
                msgs = f"  data {seen}/{s.messages_sent} verified"
            lines.append(f"  [{mark}] {s.name:<17} {s.devices:>6} devices  {outcomes}{lat_text}{msgs}")
            failed = [k for k, v in s.checks.items() if not v]
            if failed:
                lines.append(f"         failed checks: {', '.join(failed)}")
            if s.figures:
                lines.append("         " + ", ".join(f"{k} {v}" for k, v in s.figures.items()))
        lat = percentiles(self.latencies_ms())
        if lat:
            lines.append(
                "  handshake latency (ms): "
                + ", ".join(f"{k} {v:.1f}" for k, v in lat.items())
                + f" over {len(self.latencies_ms())} handshakes"
            )
        lines.append(f"  {'ALL CHECKS HELD' if self.ok else 'SOME CHECKS FAILED'} in {self.seconds:.1f} s")
        return "\n".join(lines)


def _bins(values: Sequence[float], count: int) -> tuple[list[float], list[int]]:
    """Log-spaced bin edges covering the values (at least 0.1 ms .. 1 ms wide)."""
    lo = max(0.05, min(values))
    hi = max(lo * 10, max(values))
    a, b = math.log10(lo), math.log10(hi * 1.0001)
    edges = [10 ** (a + (b - a) * i / count) for i in range(count + 1)]
    counts = [0] * count
    for v in values:
        x = max(lo, v)
        i = min(count - 1, int((math.log10(x) - a) / (b - a) * count))
        counts[i] += 1
    return edges, counts


def histogram_svg(values: Sequence[float], *, title: str, bins: int = 40) -> str:
    """A standalone SVG document: a histogram of ``values`` on a log axis, with p50/p99 marked."""
    width, height, left, right, top, bottom = 720, 360, 60, 20, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}'
        f" — {len(values)} samples</text>",
    ]
    if not values:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no samples</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"
    edges, counts = _bins(values, bins)
    peak = max(counts)
    bar_w = plot_w / bins
    for i, c in enumerate(counts):
        if not c:
            continue
        h = plot_h * c / peak
        out.append(
            f'<rect x="{left + i * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" '
            f'height="{h:.1f}" fill="#4a7fb5">'
            f"<title>{edges[i]:.2f} to {edges[i + 1]:.2f} ms: {c}</title></rect>"
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>'
    )
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>')
    a, b = math.log10(edges[0]), math.log10(edges[-1])

    def x_of(v: float) -> float:
        return left + plot_w * (math.log10(max(v, edges[0])) - a) / (b - a)

    decade = math.floor(a)
    while decade <= math.ceil(b):
        for mult in (1, 2, 5):
            v = mult * 10.0**decade
            if edges[0] <= v <= edges[-1]:
                x = x_of(v)
                out.append(
                    f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
                    'stroke="black"/>'
                )
                out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{v:g}</text>')
        decade += 1
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
        "milliseconds (log scale)</text>"
    )
    out.append(f'<text x="{left - 8}" y="{top + 4}" text-anchor="end">{peak}</text>')
    out.append(f'<text x="{left - 8}" y="{top + plot_h}" text-anchor="end">0</text>')
    for name, v in percentiles(values).items():
        if name == "max":
            continue
        x = x_of(v)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#c0392b" '
            'stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x + 3:.1f}" y="{top + 10}" fill="#c0392b">{name} {v:.1f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
