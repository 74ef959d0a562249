"""A gateway outage on an accelerated clock: what the devices' retries do to their counters, and
whether each device authenticates the moment a gateway answers again.

Each device runs the agents' own policy (``device_agent.core.policy.AgentPolicy``: answer timeout,
full-jitter backoff, counter reservation in blocks) on a simulated clock: it authenticates once, then
for ``hours`` no gateway answers, so every HELLO it sends spends a counter; it also reboots about
``REBOOTS_PER_DAY`` times a day (a new policy from its counter file: the rest of the reserved block
is skipped). When the gateway returns, the device's next HELLO runs a real handshake
(``device_agent.core``). Used by tests/core/test_outage.py and bench/bench_outage.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from device_agent.core.policy import HELLO, AgentPolicy
from firmware_sim.pair import Fleet, authenticated, handshake

REBOOTS_PER_DAY = 4.0
LIFETIME = 3600.0


@dataclass(frozen=True)
class OutageResult:
    devices: int
    hours: float
    locked_out: int  # devices refused (any reason) at their first HELLO after the outage
    min_jump: int  # smallest counter advance over the outage: > window means the old cliff bit
    max_jump: int


def _hellos(actions: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [a for a in actions if a[0] == HELLO]


def simulate_outage(n_devices: int, hours: float, *, seed: int = 1) -> OutageResult:
    rng = random.Random(seed)
    fleet = Fleet(n_devices=n_devices)
    gw = fleet.gateways[b"gw-a"]
    end = hours * 3600.0
    locked_out, jumps = 0, []
    for did in fleet.device_ids:
        policy = AgentPolicy(["gw-a"], rng.randbytes)
        policy.start(0.0)
        (_, _, _, first), = _hellos(policy.connected(0.0))
        ev, _ = handshake(fleet.device(did, b"gw-a"), gw, first, now=0.0)  # once, before the outage
        assert authenticated(ev)
        policy.authenticated("gw-a", LIFETIME, 0.0)
        now, last = 0.0, first
        next_reboot = rng.expovariate(REBOOTS_PER_DAY / 86400.0)
        while True:
            wake = policy.wake_at()
            assert wake is not None
            now = max(now, wake)
            if now >= next_reboot:  # a reboot: the policy starts again from its counter file
                policy = AgentPolicy(["gw-a"], rng.randbytes, state=policy.state())
                policy.start(now)
                next_reboot = now + rng.expovariate(REBOOTS_PER_DAY / 86400.0)
                hellos = _hellos(policy.connected(now))
            else:
                hellos = _hellos(policy.tick(now))
            if not hellos:
                continue
            counter = hellos[-1][3]
            if now >= end:  # the gateway answers again: this HELLO gets a real handshake
                break
            last = counter  # unanswered: spent
        jumps.append(counter - first)
        ev, _ = handshake(fleet.device(did, b"gw-a"), gw, counter, now=1.0)
        if not authenticated(ev):
            locked_out += 1
        assert counter > last or counter == first
    return OutageResult(n_devices, hours, locked_out, min(jumps), max(jumps))
