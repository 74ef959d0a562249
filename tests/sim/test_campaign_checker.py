"""The campaign's checker fails when any invariant is broken: each one is broken here on purpose."""

from __future__ import annotations

import dataclasses
import math

import pytest

from firmware_sim.invariants import AttackOutcome, Evidence, Fault, Revocation, check, recovery_p99

BOUNDS = {"recovery_bound_s": 10.0, "cutoff_bound_s": 1.0}


def _audit(*entries: tuple[str, int, int]) -> list[dict[str, object]]:
    return [{"event": "authenticated", "device": d, "epoch": e, "counter": c} for d, e, c in entries]


def good() -> Evidence:
    return Evidence(
        honest_counters={"aa": {(0, 1), (0, 2), (0, 3)}, "bb": {(0, 1), (0, 2)}},
        completed={"aa": [(0, 1, 1.0), (0, 3, 20.0)], "bb": [(0, 2, 21.0)]},
        audit={
            "gw-a": [*_audit(("aa", 0, 1), ("bb", 0, 2), ("aa", 0, 3)), {"event": "cut_off", "device": "cc"}]
        },
        audit_verified={"gw-a": (True, "audit log ok: 4 records; 1 anchors on chain")},
        verified_data={"aa": [2.0, 22.0], "bb": [22.5]},
        faults=[Fault(kind="kill_gateway", started=10.0, ended=15.0)],
        revocations=[Revocation(device="cc", revoked_at=30.0, cut_off_at=30.4, refused_after=True)],
        attacks=[AttackOutcome(name="replay", held=True)],
        final_auth={"aa": True, "bb": True},
    )


def verdict(evidence: Evidence) -> dict[str, bool]:
    return {v.name.split(" within")[0]: v.held for v in check(evidence, **BOUNDS)}


def test_a_clean_run_holds_every_invariant() -> None:
    assert all(verdict(good()).values()), check(good(), **BOUNDS)
    assert recovery_p99(good()) == pytest.approx(7.5)


def broken(**changes: object) -> Evidence:
    return dataclasses.replace(good(), **changes)


@pytest.mark.parametrize(
    ("name", "evidence"),
    [
        # a session with a counter the device never sent: a forged or replayed HELLO was accepted
        (
            "no forged or replayed session accepted",
            broken(audit={"gw-a": _audit(("aa", 0, 1), ("bb", 0, 2), ("aa", 0, 3), ("aa", 0, 9))}),
        ),
        # an authenticated record without its counter cannot be matched: not evidence of honesty
        (
            "no forged or replayed session accepted",
            broken(
                audit={
                    "gw-a": [
                        {"event": "authenticated", "device": "aa"},
                        *_audit(("bb", 0, 2), ("aa", 0, 1), ("aa", 0, 3)),
                    ]
                }
            ),
        ),
        (
            "no OTP counter accepted twice",
            broken(audit={"gw-a": _audit(("aa", 0, 1), ("bb", 0, 2), ("aa", 0, 3), ("aa", 0, 3))}),
        ),
        (
            "no audit record lost or altered",
            broken(audit={"gw-a": _audit(("aa", 0, 1), ("bb", 0, 2))}),
        ),  # aa's counter 3 completed, not audited
        (
            "no audit record lost or altered",
            broken(audit_verified={"gw-a": (False, "audit chain broken at record 2")}),
        ),
        ("no audit record lost or altered", broken(audit_verified={})),
        (
            "every revoked device cut off",
            broken(
                revocations=[Revocation(device="cc", revoked_at=30.0, cut_off_at=31.5, refused_after=True)]
            ),
        ),
        (
            "every revoked device cut off",
            broken(
                revocations=[Revocation(device="cc", revoked_at=30.0, cut_off_at=None, refused_after=True)]
            ),
        ),
        (
            "every revoked device cut off",
            broken(
                revocations=[Revocation(device="cc", revoked_at=30.0, cut_off_at=30.2, refused_after=False)]
            ),
        ),
        ("every revoked device cut off", broken(revocations=[])),
        ("legitimate devices back", broken(verified_data={"aa": [2.0, 22.0], "bb": [26.0]})),  # 11 s
        ("legitimate devices back", broken(verified_data={"aa": [2.0, 22.0], "bb": [3.0]})),  # never
        ("legitimate devices back", broken(faults=[])),
        ("no device locked out", broken(final_auth={"aa": True, "bb": False})),
        (
            "every attack refused",
            broken(attacks=[AttackOutcome(name="clone", held=False, detail="no alert")]),
        ),
        ("every attack refused", broken(attacks=[])),
    ],
)
def test_breaking_one_invariant_fails_exactly_that_one(name: str, evidence: Evidence) -> None:
    result = verdict(evidence)
    assert result[name] is False, check(evidence, **BOUNDS)
    assert all(held for other, held in result.items() if other != name), check(evidence, **BOUNDS)


def test_devices_taken_out_on_purpose_are_not_expected_back() -> None:
    evidence = broken(final_auth={"aa": True}, verified_data={"aa": [2.0, 22.0]}, excluded=frozenset({"bb"}))
    assert all(verdict(evidence).values())


def test_a_device_that_never_came_back_counts_as_infinitely_late() -> None:
    assert recovery_p99(broken(verified_data={"aa": [2.0], "bb": []})) == math.inf


def test_each_round_of_the_schedule_pairs_every_fault_and_every_attack() -> None:
    import random

    from firmware_sim.campaign import ATTACKS, FAULTS, schedule

    pairs = schedule(random.Random(3), list(FAULTS), list(ATTACKS), rounds=2)
    n = max(len(FAULTS), len(ATTACKS))
    assert len(pairs) == 2 * n
    for first in (pairs[:n], pairs[n:]):
        assert {f for f, _ in first} == set(FAULTS) and {a for _, a in first} == set(ATTACKS)
    assert schedule(random.Random(3), list(FAULTS), list(ATTACKS)) == schedule(
        random.Random(3), list(FAULTS), list(ATTACKS)
    )  # a seed replays a campaign
