"""Figures quoted in the README and docs/ come from bench/results.json.

README: each quoted figure is listed here with the result it stands for, and checked against the
committed run; a figure in the README's Figures section that no claim covers fails too (so a new one
cannot be added by hand). docs/*.md: a table row that names a figure of bench/results.json (in
backticks) quotes its value, checked the same way; figures that bench/ does not produce (one-off
experiments, published numbers) say where they come from in the text around them
(docs/BENCHMARKS.md is generated from the results and not checked here)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RESULTS: Mapping[str, float] = json.loads((ROOT / "bench" / "results.json").read_text())


def about(value: float, quoted: float, tolerance: float = 0.15) -> bool:
    """``~N``: within ``tolerance`` of the measured value (runs on a shared machine vary)."""
    return abs(value - quoted) <= tolerance * quoted


# (the text quoted in the README, the check against bench/results.json)
CLAIMS: list[tuple[str, Callable[[Mapping[str, float]], bool]]] = [
    (
        "a 61-byte handshake",
        lambda r: sum(r[f"handshake_bytes_{m}"] for m in ("hello", "challenge", "proof", "result")) == 61,
    ),
    (
        "61-byte mutual-authentication handshake",
        lambda r: sum(r[f"handshake_bytes_{m}"] for m in ("hello", "challenge", "proof", "result")) == 61,
    ),
    (
        "verifies 68,000\u201375,000 handshakes/s on one core",  # an en dash, as the README writes it
        lambda r: 68_000 * 0.85 <= r["gateway_core_handshakes_per_s"] <= 75_000 * 1.15,
    ),
    ("under 8 KB as `.mpy`", lambda r: r["device_core_mpy_bytes"] < 8 * 1024),
    ("peaks under 12 KB of heap", lambda r: r["device_core_heap_peak_bytes"] < 12 * 1024),
    ("with 1,000 concurrent devices, ~7,200 handshakes/s", lambda r: about(r["e2e_handshakes_per_s"], 7_200)),
    (
        "in well under a second with 10,000 devices enrolled",
        lambda r: r["enroll_devices"] >= 10_000 and r["revocation_cutoff_max_ms"] < 1000,
    ),
]


@pytest.mark.parametrize(("text", "check"), CLAIMS, ids=[c[0] for c in CLAIMS])
def test_each_quoted_figure_matches_the_committed_run(text, check):
    assert " ".join(text.split()) in " ".join(README.split()), f"the README no longer says {text!r}"
    assert check(RESULTS), f"bench/results.json no longer supports {text!r}"


def test_every_figure_in_the_figures_section_is_a_claim():
    section = README.split("## Figures", 1)[1].split("\n## ", 1)[0]
    covered = " ".join(" ".join(text.split()) for text, _ in CLAIMS)
    for number in re.findall(r"\d[\d,.]*", section):
        assert number.rstrip(".,") in covered, f"{number} in the README's Figures section is not checked"


DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "BENCHMARKS.md")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _doc_rows() -> list[tuple[str, list[str], list[float]]]:
    """(doc:line, the results it names, the numbers its figure cell quotes) per table row."""
    rows = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            for i, cell in enumerate(cells):
                keys = [k for k in re.findall(r"`([a-z0-9_]+)`", cell) if k in RESULTS]
                if keys:
                    quoted = [c for c in cells[i + 1 :] if NUMBER.search(c)]
                    numbers = [float(x.replace(",", "")) for x in NUMBER.findall(quoted[0])] if quoted else []
                    rows.append((f"{doc.name}:{n}", keys, numbers))
                    break
    return rows


DOC_ROWS = _doc_rows()


def test_the_docs_quote_figures_of_the_committed_run():
    assert {"AGENT.md", "GATEWAY.md", "SIMULATOR.md"} <= {where.split(":")[0] for where, _, _ in DOC_ROWS}


@pytest.mark.parametrize(("where", "keys", "numbers"), DOC_ROWS, ids=[r[0] for r in DOC_ROWS])
def test_each_figure_quoted_in_a_docs_table_matches_the_committed_run(where, keys, numbers):
    assert len(numbers) >= len(keys), f"{where} names {keys} but quotes no figure for each"
    for key, quoted in zip(keys, numbers, strict=False):
        assert about(RESULTS[key], quoted), (
            f"{where}: {key} is {RESULTS[key]:,.1f} in bench/results.json, quoted {quoted:,}"
        )


def test_a_drifted_docs_figure_would_fail():
    assert not about(RESULTS["mpy_agent_heap_peak_bytes"], RESULTS["mpy_agent_heap_peak_bytes"] * 1.5)
