"""Run the benchmarks and write bench/results.json (see bench/__init__.py)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import time
from pathlib import Path

from bench.report import META, RESULTS, machine_info, write_report

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = os.environ.get("BENCH_ONLY", "")
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if n == only or n == f"bench_{only}"]
    results: dict[str, float] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    meta = json.loads(META.read_text()) if META.exists() else {}
    meta["machine"] = machine_info()
    modules = meta.setdefault("modules", {})
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            figures = importlib.import_module(f"bench.{name}").run()
        except Exception as exc:  # a failing benchmark must not hide the others' figures
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        results.update(figures)
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        modules[name] = {
            "figures": sorted(figures),
            "seconds": round(time.perf_counter() - t0, 1),
            "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        META.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for key, value in figures.items():
            print(f"   {key:<44} {value:>14,.3f}")
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    doc = write_report()
    print(f"\nwrote {RESULTS.name} ({len(results)} figures) and {doc.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
