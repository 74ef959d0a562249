"""``outage_locked_out_devices``: devices still refused when a gateway returns after a 24 h outage.

500 devices, each authenticated once, then 24 hours (accelerated clock) in which no gateway
answers: every device runs the agents' own policy (``device_agent.core.policy.AgentPolicy``: answer
timeout 5 s, full-jitter backoff 0.5 s base / 60 s cap, counters reserved in blocks of 16), each HELLO
spending a counter, and reboots ~4 times a day (skipping the rest of a reserved block).
When the gateway returns, each device runs one real
handshake with its next counter (``device_agent.core``): the figure counts those that do not
authenticate (target 0; with the old look-ahead window of 100 it was every device).
``outage_counter_jump_min`` is the smallest counter advance seen (it must exceed 100 for the figure to
mean anything). Simulation: firmware_sim/outage.py, shared with tests/core/test_outage.py.
"""

from __future__ import annotations

from firmware_sim.outage import simulate_outage


def run() -> dict[str, float]:
    result = simulate_outage(500, 24.0, seed=2026)
    return {
        "outage_locked_out_devices": float(result.locked_out),
        "outage_counter_jump_min": float(result.min_jump),
    }
