"""A short run of ``make campaign`` whose verdict becomes figures: invariants broken, recovery p99.

The campaign (``firmware_sim.campaign``, see its docstring) runs in its own process exactly as
``make campaign`` runs it, with a shorter fault phase so that the benchmark stays within ~3 minutes:
``BENCH_CAMPAIGN_SECONDS`` (default 90) of faults and attacks on ``BENCH_CAMPAIGN_DEVICES`` (default 50)
honest devices, seed ``BENCH_CAMPAIGN_SEED`` (default 14, so runs draw the same schedule). Its run
directory (``run/campaign-<ts>-<pid>/``, kept with its evidence) holds ``campaign.json``, from which:

- ``campaign_invariants_broken``: invariants that did not hold (target 0);
- ``campaign_recovery_p99_s``: p99 over (fault, honest device) of the seconds from the fault's end to
  the device's next verified data (target <= 10); 9999 when a device never came back;
- ``campaign_faults``, ``campaign_attacks``: how many of each the run injected.

The full campaign (``make campaign``: 9 minutes of faults, 100 devices) is the stronger run; this one
keeps the figures in ``bench/results.json`` current.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEVER = 9999.0


def run() -> dict[str, float]:
    env = {
        **os.environ,
        "CAMPAIGN_SECONDS": os.environ.get("BENCH_CAMPAIGN_SECONDS", "90"),
        "CAMPAIGN_DEVICES": os.environ.get("BENCH_CAMPAIGN_DEVICES", "50"),
        "CAMPAIGN_SEED": os.environ.get("BENCH_CAMPAIGN_SEED", "14"),
        "CAMPAIGN_RUN_ROOT": str(ROOT / "run"),
    }
    before = set((ROOT / "run").glob("campaign-*"))
    done = subprocess.run(
        [sys.executable, "-m", "firmware_sim.campaign"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    new = sorted(set((ROOT / "run").glob("campaign-*")) - before)
    if not new or not (new[-1] / "campaign.json").exists():
        raise RuntimeError(f"the campaign wrote no verdict (exit {done.returncode}):\n{done.stdout[-3000:]}")
    verdict = json.loads((new[-1] / "campaign.json").read_text())
    print(f"   evidence in {new[-1]} (campaign exit {done.returncode})", flush=True)
    p99 = verdict["campaign_recovery_p99_s"]
    return {
        "campaign_invariants_broken": float(verdict["campaign_invariants_broken"]),
        "campaign_recovery_p99_s": NEVER if p99 is None else float(p99),
        "campaign_faults": float(len(verdict["faults"])),
        "campaign_attacks": float(len(verdict["attacks"])),
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12,.2f}")
