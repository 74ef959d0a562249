"""The campaign's verdict: invariants checked from evidence the system itself left behind.

Strategy: the campaign (``firmware_sim.campaign``) gathers evidence from outside the gateway's good
intentions — the gateway's hash-chained audit log and its on-chain anchors (``diams-gateway audit verify
--anchors --config``), the verified topics the gateway republishes (seen by an observer account, as an
application would), the honest devices' own record of the counters they sent and the handshakes they
completed, the broker closing revoked devices' connections — and ``check`` turns it into one verdict per
invariant. ``check`` is a pure function of an ``Evidence`` value, so tests break each invariant on
purpose and watch it fail (tests/sim/test_campaign_checker.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AttackOutcome",
    "Evidence",
    "Fault",
    "Invariant",
    "Revocation",
    "check",
    "recovery_by_fault",
    "recovery_times",
]


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected fault: ``kind`` (kill_gateway, kill_broker, cpu_stress, ...), in campaign seconds."""

    kind: str
    started: float
    ended: float
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Revocation:
    device: str
    revoked_at: float
    cut_off_at: float | None  # when the broker closed the device's connection
    refused_after: bool  # a reconnect with the device's credentials was refused


@dataclass(frozen=True, kw_only=True)
class AttackOutcome:
    name: str
    held: bool
    detail: str = ""
    started: float = 0.0  # campaign seconds (0: not recorded)


@dataclass(kw_only=True)
class Evidence:
    """Everything the verdict rests on. Device ids are hex strings; times are campaign seconds."""

    honest_counters: Mapping[str, set[tuple[int, int]]]  # (epoch, counter) each honest device sent
    completed: Mapping[str, Sequence[tuple[int, int, float]]]  # handshakes it completed: (epoch, counter, t)
    audit: Mapping[str, Sequence[Mapping[str, Any]]]  # gateway id -> its audit records, in order
    audit_verified: Mapping[str, tuple[bool, str]]  # gateway id -> (chain and anchors verify, output)
    verified_data: Mapping[str, Sequence[float]]  # device -> times its data was seen on a verified topic
    faults: Sequence[Fault] = ()
    revocations: Sequence[Revocation] = ()
    attacks: Sequence[AttackOutcome] = ()
    final_auth: Mapping[str, bool] = field(default_factory=dict)  # honest device -> authenticated at the end
    excluded: frozenset[str] = frozenset()  # honest devices taken out on purpose (revoked by the campaign)


@dataclass(frozen=True, kw_only=True)
class Invariant:
    name: str
    held: bool
    detail: str


def _authenticated(evidence: Evidence) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for gateway, records in evidence.audit.items():
        for rec in records:
            if rec.get("event") == "authenticated":
                yield gateway, rec


def recovery_by_fault(evidence: Evidence) -> list[tuple[Fault, list[float]]]:
    """For each fault, for each honest device: seconds from the fault's end to its next verified data.

    A device with no verified data after a fault counts as ``inf``."""
    devices = [d for d in evidence.honest_counters if d not in evidence.excluded]
    out = []
    for fault in evidence.faults:
        times = []
        for device in devices:
            after = [t for t in evidence.verified_data.get(device, ()) if t >= fault.ended]
            times.append(min(after) - fault.ended if after else math.inf)
        out.append((fault, times))
    return out


def recovery_times(evidence: Evidence) -> list[float]:
    """Every (fault, honest device) recovery time of ``recovery_by_fault``, flat."""
    return [t for _, times in recovery_by_fault(evidence) for t in times]


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered)) - 1))]


def check(evidence: Evidence, *, recovery_bound_s: float, cutoff_bound_s: float) -> list[Invariant]:
    """One verdict per invariant, each with what it rests on or what broke it."""
    honest = evidence.honest_counters
    verdicts: list[Invariant] = []

    # 1. Every session the gateways accepted for an honest device used a counter that device sent.
    forged = []
    for gateway, rec in _authenticated(evidence):
        device = rec.get("device", "")
        if device not in honest:
            continue  # an identity the attacks use on purpose (clones, replays of their own)
        if "counter" not in rec or (rec.get("epoch", 0), rec["counter"]) not in honest[device]:
            forged.append(f"{gateway}: {device} counter {rec.get('counter')}")
    n_auth = sum(1 for _ in _authenticated(evidence))
    verdicts.append(
        Invariant(
            name="no forged or replayed session accepted",
            held=not forged,
            detail=f"{n_auth} sessions audited" if not forged else f"{len(forged)}: {forged[:3]}",
        )
    )

    # 2. No OTP counter accepted twice (per gateway, device and epoch).
    uses = Counter(
        (gateway, rec.get("device"), rec.get("epoch", 0), rec.get("counter"))
        for gateway, rec in _authenticated(evidence)
        if "counter" in rec
    )
    twice = [k for k, n in uses.items() if n > 1]
    verdicts.append(
        Invariant(
            name="no OTP counter accepted twice",
            held=not twice,
            detail=f"{len(uses)} counters accepted once each" if not twice else f"{len(twice)}: {twice[:3]}",
        )
    )

    # 3. No audit record lost or altered: chains and anchors verify, every completed handshake audited.
    audited = {
        (rec.get("device"), rec.get("epoch", 0), rec.get("counter")) for _, rec in _authenticated(evidence)
    }
    lost = [
        f"{device} counter {counter}"
        for device, done in evidence.completed.items()
        for epoch, counter, _ in done
        if (device, epoch, counter) not in audited
    ]
    broken = [
        f"{gw}: {out.strip().splitlines()[-1] if out.strip() else 'failed'}"
        for gw, (ok, out) in evidence.audit_verified.items()
        if not ok
    ]
    if not evidence.audit_verified:
        broken.append("no audit log was verified")
    verdicts.append(
        Invariant(
            name="no audit record lost or altered",
            held=not lost and not broken,
            detail=(
                f"{len(evidence.audit_verified)} logs verify with their anchors; "
                f"{sum(len(v) for v in evidence.completed.values())} completed handshakes all audited"
            )
            if not lost and not broken
            else f"lost {len(lost)} {lost[:3]}; broken {broken}",
        )
    )

    # 4. Every revoked device cut off within the bound, and refused afterwards.
    late = [
        f"{r.device}: {'never' if r.cut_off_at is None else f'{(r.cut_off_at - r.revoked_at) * 1e3:.0f} ms'}"
        f"{'' if r.refused_after else ', reconnect accepted'}"
        for r in evidence.revocations
        if r.cut_off_at is None or r.cut_off_at - r.revoked_at > cutoff_bound_s or not r.refused_after
    ]
    worst = max(
        ((r.cut_off_at - r.revoked_at) for r in evidence.revocations if r.cut_off_at is not None), default=0.0
    )
    verdicts.append(
        Invariant(
            name=f"every revoked device cut off within {cutoff_bound_s:g} s",
            held=not late and bool(evidence.revocations),
            detail=(
                f"{len(evidence.revocations)} revoked, worst {worst * 1e3:.0f} ms"
                if not late
                else f"{late[:3]}"
            )
            if evidence.revocations
            else "no revocation was exercised",
        )
    )

    # 5. Every legitimate device back (data verified) within N s of the end of each fault.
    times = recovery_times(evidence)
    slow = sum(1 for t in times if t > recovery_bound_s)
    late_faults = [
        f"{f.kind}@{f.ended:.0f}s: {sum(t > recovery_bound_s for t in ts)} late, worst {max(ts):.1f} s"
        for f, ts in recovery_by_fault(evidence)
        if any(t > recovery_bound_s for t in ts)
    ]
    verdicts.append(
        Invariant(
            name=f"legitimate devices back within {recovery_bound_s:g} s of each fault",
            held=slow == 0 and bool(evidence.faults),
            detail=(
                f"{len(evidence.faults)} faults x {len(times) // max(1, len(evidence.faults))} devices, "
                f"p99 {_p99(times):.1f} s, {slow} late"
                + (f" ({'; '.join(late_faults)})" if late_faults else "")
            )
            if evidence.faults
            else "no fault was injected",
        )
    )

    # 6. No device locked out: every honest device still authenticates at the end.
    out = sorted(d for d in honest if d not in evidence.excluded and not evidence.final_auth.get(d, False))
    verdicts.append(
        Invariant(
            name="no device locked out",
            held=not out,
            detail=f"{len(honest) - len(evidence.excluded)} devices authenticated at the end"
            if not out
            else f"{len(out)} could not authenticate: {out[:3]}",
        )
    )

    # 7. Every attack ended as the protocol requires.
    failed = [f"{a.name}: {a.detail}" for a in evidence.attacks if not a.held]
    verdicts.append(
        Invariant(
            name="every attack refused",
            held=not failed and bool(evidence.attacks),
            detail=f"{len(evidence.attacks)} attacks" if not failed else f"{failed[:3]}",
        )
    )
    return verdicts


def recovery_p99(evidence: Evidence) -> float:
    return _p99(recovery_times(evidence))
