"""A gateway outage on an accelerated clock: what the devices' retries do to their counters, and
whether each device authenticates the moment a gateway answers again.

During the outage nothing reaches a gateway, so only the devices' side is simulated, event by
event, with the agents' real retry schedule (``device_agent.agent.backoff.Backoff``, the agent's
answer timeout) and their counter reservation (a reboot skips the rest of a reserved block). Each
HELLO sent spends a counter. When the gateway returns, every device runs one real handshake
(``device_agent.core``) with its next counter. Used by tests/core/test_outage.py and
bench/bench_outage.py (``outage_locked_out_devices``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from device_agent.agent.backoff import Backoff
from tests.core.pair import Fleet, authenticated, handshake

ANSWER_TIMEOUT = 5.0  # device_agent.agent.config: answer_timeout_s
COUNTER_BLOCK = 16  # device_agent.agent.counters.CounterStore: block
REBOOTS_PER_DAY = 4.0


@dataclass(frozen=True)
class OutageResult:
    devices: int
    hours: float
    locked_out: int  # devices refused (any reason) at their first HELLO after the outage
    min_jump: int  # smallest counter advance over the outage: > window means the old cliff bit
    max_jump: int


def simulate_outage(n_devices: int, hours: float, *, seed: int = 1) -> OutageResult:
    rng = random.Random(seed)
    fleet = Fleet(n_devices=n_devices)
    gw = fleet.gateways[b"gw-a"]
    end = hours * 3600.0
    locked_out, jumps = 0, []
    for did in fleet.device_ids:
        dev = fleet.device(did, b"gw-a")
        ev, _ = handshake(dev, gw, 0, now=0.0)  # authenticated once before the outage: floor 0
        assert authenticated(ev)
        counter, t = 1, 0.0
        backoff = Backoff(uniform=rng.uniform)
        next_reboot = rng.expovariate(REBOOTS_PER_DAY / 86400.0)
        while t < end:
            if t >= next_reboot:  # the reserved block's unused rest is skipped, retries start afresh
                counter = (counter // COUNTER_BLOCK + 1) * COUNTER_BLOCK
                backoff.reset()
                next_reboot = t + rng.expovariate(REBOOTS_PER_DAY / 86400.0)
            counter += 1  # one HELLO, unanswered
            t += ANSWER_TIMEOUT + backoff.next_delay()
        jumps.append(counter)
        ev, _ = handshake(fleet.device(did, b"gw-a"), gw, counter, now=1.0)  # the gateway is back
        if not authenticated(ev):
            locked_out += 1
    return OutageResult(n_devices, hours, locked_out, min(jumps), max(jumps))
