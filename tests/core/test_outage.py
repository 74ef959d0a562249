"""No lasting lockout: after a 24 h gateway outage (accelerated clock) every device authenticates at
its first HELLO. The retries spend far more counters than the old look-ahead window (100), which the
gateway used to refuse as ``counter_window`` until the owner re-keyed the device."""

from __future__ import annotations

from firmware_sim.outage import simulate_outage


def test_a_24_hour_outage_locks_no_device_out() -> None:
    result = simulate_outage(40, 24.0, seed=7)
    assert result.min_jump > 100, "the outage must spend more counters than the old window to test it"
    assert result.locked_out == 0, result
