"""The core's agent policy as tables of events -> actions (the same policy drives the paho agent, the
MicroPython agent and the simulator's device; tests/micropython runs it under the real unix port)."""

from __future__ import annotations

import random as _random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.core import policy as p
from device_agent.core.policy import CONNECT, END_SESSION, HELLO, SAVE, AgentPolicy

MAX = lambda n: b"\xff" * n  # noqa: E731  the top of the jitter window (fraction ~ 1)
ZERO = lambda n: b"\x00" * n  # noqa: E731


def make(gateways=("gw-a", "gw-b"), random=MAX, **kw: Any) -> AgentPolicy:
    kw.setdefault("answer_timeout", 5.0)
    kw.setdefault("reauth_margin", 10.0)
    kw.setdefault("backoff_base", 1.0)
    kw.setdefault("backoff_cap", 8.0)
    kw.setdefault("reconnect_base", 2.0)
    kw.setdefault("block", 4)
    return AgentPolicy(gateways, random, **kw)


def kinds(actions: list[tuple[Any, ...]]) -> list[Any]:
    """Actions without the SAVE text (checked separately): easier to read in a table."""
    return [a if a[0] != SAVE else (SAVE,) for a in actions]


def run(policy: AgentPolicy, table: list[tuple[str, tuple[Any, ...], list[tuple[Any, ...]]]]) -> None:
    for step, (event, args, expected) in enumerate(table):
        got = kinds(getattr(policy, event)(*args))
        assert got == expected, (step, event, args, got)


def test_startup_connect_hello_and_session() -> None:
    run(make(), [
        ("start", (0.0,), [(CONNECT, 0)]),
        ("connected", (0.1,), [(SAVE,), (HELLO, "gw-a", 0, 0)]),  # counters 0-3 reserved first
        ("authenticated", ("gw-a", 100.0, 0.2), []),
        ("tick", (50.0,), []),
        ("tick", (90.0,), [(HELLO, "gw-a", 0, 1)]),  # reauth_margin before the end; no write (block)
        ("authenticated", ("gw-a", 190.0, 90.1), []),
        ("tick", (180.0,), [(HELLO, "gw-a", 0, 2)]),
        ("tick", (186.0,), [(SAVE,), (HELLO, "gw-b", 0, 0)]),  # no answer: failover to gw-b
        ("tick", (190.0,), [(END_SESSION, "expired")]),  # the old session ends; the attempt goes on
        ("tick", (191.0,), []),  # gw-b silent too: a whole round failed, backoff U(0, 1 s)
        ("tick", (192.0,), [(HELLO, "gw-a", 0, 3)]),
    ])


def test_failover_round_then_jittered_backoff_then_reset() -> None:
    pol = make(gateways=("a", "b", "c"), block=100)
    pol.connected(0.0)
    assert pol.attempt[:3] == ("a", 0, 0)
    for now, nxt in ((5.0, "b"), (10.0, "c")):
        assert kinds(pol.tick(now)) == [(SAVE,), (HELLO, nxt, 0, 0)]  # at once, next gateway
    assert pol.tick(15.0) == [] and pol.wake_at() == pytest.approx(16.0)  # full round: U(0, 1)
    assert kinds(pol.tick(16.0)) == [(HELLO, "a", 0, 1)]
    pol.tick(21.0), pol.tick(26.0), pol.tick(31.0)
    assert pol.wake_at() == pytest.approx(33.0)  # second round: U(0, 2)
    pol.tick(33.0)
    assert kinds(pol.authenticated("a", 1000.0, 33.5)) == []
    assert pol.gateways[pol._index] == "a" and pol._backoff_n == 0  # stays with the gateway that answered


def test_a_reject_moves_on_like_a_timeout() -> None:
    run(make(), [
        ("connected", (0.0,), [(SAVE,), (HELLO, "gw-a", 0, 0)]),
        ("rejected", ("gw-a", "bad_otp", 0, 1.0), [(SAVE,), (HELLO, "gw-b", 0, 0)]),
        ("rejected", ("gw-b", "denied", 0, 2.0), []),  # round over: wait
        ("tick", (3.0,), [(HELLO, "gw-a", 0, 1)]),
    ])
    assert make().stats == {}


def test_epoch_hint_retried_at_once_and_committed_only_after_success() -> None:
    pol = make()
    run(pol, [
        ("connected", (0.0,), [(SAVE,), (HELLO, "gw-a", 0, 0)]),
        # no write for the trial: its counter is the committed epoch's next (reserved, durable)
        ("rejected", ("gw-a", "stale_epoch", 3, 0.1), [(HELLO, "gw-a", 3, 1)]),
    ])
    assert pol.epoch == 0
    actions = pol.authenticated("gw-a", 100.0, 0.2)
    assert kinds(actions) == [(SAVE,)] and pol.epoch == 3
    # older epochs' counters carry over into the adopted one, and the sequence continues
    assert p.parse_counters(actions[0][1]) == (3, {("gw-a", 3): 3})
    assert kinds(pol.reauth(90.0)) == [(HELLO, "gw-a", 3, 2)]


def test_a_forged_epoch_hint_costs_one_attempt_and_commits_nothing() -> None:
    pol = make(gateways=("gw-a",))
    run(pol, [
        ("connected", (0.0,), [(SAVE,), (HELLO, "gw-a", 0, 0)]),
        ("rejected", ("gw-a", "stale_epoch", 0xFFFFFF, 0.1), [(HELLO, "gw-a", 0xFFFFFF, 1)]),  # no SAVE
        ("rejected", ("gw-a", "stale_epoch", 0, 0.2), []),  # the real gateway: a lower hint is a failure
        ("tick", (1.2,), [(HELLO, "gw-a", 0, 2)]),  # trial forgotten: the committed epoch again
    ])
    assert pol.epoch == 0 and pol.stats["epoch_hints"] == 1 and pol.stats["failed_stale_epoch"] == 1
    assert pol.state() == "0\ngw-a 0 3\n"  # the file never names the hinted epoch


def test_forged_hints_write_nothing_of_their_own() -> None:
    """A hint never costs a flash write (issue 10, item 5): many forged hints, block 4; the only writes
    are the block reservations that the same number of HELLOs costs anyway, and the counter file never
    gains a line."""
    pol = make(gateways=("gw-a",), block=4)
    writes, hellos = 0, 0
    pol.connected(0.0)
    now = 0.0
    for n in range(40):
        now += 100.0
        hinted = pol.rejected("gw-a", "stale_epoch", 1000 + n, now)  # a forged hint at each attempt
        writes += sum(1 for a in hinted if a[0] == SAVE)
        hellos += sum(1 for a in hinted if a[0] == HELLO)
        failed = pol.rejected("gw-a", "bad_otp", 0, now + 0.1) + pol.tick(now + 50.0)
        writes += sum(1 for a in failed if a[0] == SAVE)
        hellos += sum(1 for a in failed if a[0] == HELLO)
    assert writes == hellos // 4  # one reservation a block of counters, hints or not
    assert pol.state().count("\n") == 2 and pol.epoch == 0


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3), st.booleans()), max_size=30))
def test_no_counter_is_sent_twice_under_one_epoch_across_restarts(
    steps: list[tuple[bool, int, bool]],
) -> None:
    """Trials under hinted epochs write nothing, reboots lose everything not written, and adoptions
    (a success under a hint) move on: still no (gateway, epoch, counter) is ever sent twice."""
    sent: set[tuple[str, int, int]] = set()
    saved = None
    pol = make(gateways=("gw-a",), block=3)
    now = 0.0

    def note(actions: list[tuple[Any, ...]]) -> None:
        nonlocal saved
        for a in actions:
            if a[0] == SAVE:
                saved = a[1]
            elif a[0] == HELLO:
                assert a[1:] not in sent, a
                sent.add(a[1:])

    note(pol.connected(now))
    for reboot, hint, succeed in steps:
        now += 100.0
        if reboot:
            pol = make(gateways=("gw-a",), block=3, state=saved)
            note(pol.connected(now))
        if pol.attempt is None:
            note(pol.tick(now + 60.0))
            now += 60.0
        note(pol.rejected("gw-a", "stale_epoch", pol.epoch + hint, now + 0.1))
        if succeed:
            note(pol.authenticated("gw-a", now + 1000.0, now + 0.2))
            note(pol.reauth(now + 0.3))
        else:
            note(pol.rejected("gw-a", "bad_otp", 0, now + 0.2))


def test_lower_or_equal_hints_are_failures() -> None:
    pol = make(gateways=("gw-a",), epoch=2)
    pol.connected(0.0)
    assert pol.rejected("gw-a", "stale_epoch", 2, 0.1) == [] and pol.stats["failed_stale_epoch"] == 1


def test_stray_results_change_nothing() -> None:
    pol = make()
    pol.connected(0.0)
    assert pol.authenticated("gw-b", 100.0, 0.1) == [] and pol.expires is None
    assert pol.rejected("gw-b", "bad_otp", 0, 0.1) == [] and pol.attempt[0] == "gw-a"
    assert pol.stats["stray_results"] == 2


def test_reauth_command_starts_a_handshake_and_keeps_the_session() -> None:
    pol = make()
    pol.connected(0.0)
    pol.authenticated("gw-a", 100.0, 0.1)
    assert kinds(pol.reauth(20.0)) == [(HELLO, "gw-a", 0, 1)]
    assert pol.has_session(20.0) and pol.reauth(21.0) == []  # one in flight: nothing more


def test_no_session_signal_can_at_most_start_one_handshake() -> None:
    pol = make(min_reauth=10.0)
    pol.connected(0.0)
    pol.authenticated("gw-a", 1000.0, 0.1)
    assert pol.no_session("gw-a", 5.0) == []  # just authenticated: a forged signal is ignored
    assert pol.no_session("gw-b", 50.0) == []  # not the session's gateway
    assert kinds(pol.no_session("gw-a", 50.0)) == [(END_SESSION, "no_session"), (HELLO, "gw-a", 0, 1)]
    assert not pol.has_session(50.0)
    for t in (50.1, 50.2, 51.0):
        assert pol.no_session("gw-a", t) == []  # a flood while the handshake runs: nothing
    assert pol.stats["no_session"] == 1 and pol.stats["no_session_ignored"] == 5


def test_a_clock_stepped_back_does_not_make_a_restarted_gateways_signal_look_forged() -> None:
    """Found by the campaign: after the device's clock stepped back an hour, every no-session signal
    looked "just after" the last authentication and was ignored, so the device kept sending data
    into a restarted gateway that dropped it, for an hour."""
    pol = make(min_reauth=10.0)
    pol.connected(5000.0)
    pol.authenticated("gw-a", 10_000.0, 5000.1)
    stepped_back = 5000.1 - 3600.0 + 30.0  # the clock was corrected, then the gateway restarted
    assert kinds(pol.no_session("gw-a", stepped_back)) == [(END_SESSION, "no_session"), (HELLO, "gw-a", 0, 1)]
    # and the floor between two signal-led handshakes holds again from the new authentication
    pol.authenticated("gw-a", stepped_back + 1000.0, stepped_back + 0.1)
    assert pol.no_session("gw-a", stepped_back + 5.0) == []


def test_disconnect_abandons_the_attempt_and_reconnects_with_backoff() -> None:
    pol = make(gateways=("gw-a",), random=ZERO)
    run(pol, [
        ("start", (0.0,), [(CONNECT, 0)]),
        ("connected", (0.0,), [(SAVE,), (HELLO, "gw-a", 0, 0)]),
        ("disconnected", (1.0,), [(CONNECT, 0)]),  # U(0, 2) with a zero draw: at once
        ("tick", (1.5,), []),
        ("connected", (2.0,), [(HELLO, "gw-a", 0, 1)]),  # the abandoned attempt restarts at once
    ])
    assert pol.attempt[:2] == ("gw-a", 0)


def test_refused_logins_wait_the_long_backoff_growing_until_one_is_accepted() -> None:
    """A refused login does not clear in seconds (revoked, suspended, not enrolled): after the epoch
    probe the next dial waits U(0, min(15 * backoff_cap, backoff_cap * 2^n)), n = failed dials in a
    row, not the reconnect backoff of a lost link (it moved here from the paho agent: one rule)."""
    pol = make(random=MAX, reconnect_base=2.0, backoff_cap=60.0, epoch_probe=0)
    pol.start(0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        pol.login_refused(now)
        waits.append(round(pol.wake_at() - now, 3))
        now = pol.wake_at()
        assert kinds(pol.tick(now)) == [(CONNECT, 0)]
    assert waits == [60.0, 120.0, 240.0, 480.0, 900.0, 900.0]
    pol.disconnected(now)  # a dial that failed (the broker unreachable) counts as a failed dial too
    assert pol.wake_at() == pytest.approx(now + 60.0)  # U(0, min(cap, 2 * 2^6))
    now = pol.wake_at()
    pol.tick(now)
    pol.connected(now)
    pol.login_refused(now + 1)
    assert pol.wake_at() == pytest.approx(now + 61.0)  # reset by the accepted connection
    pol.connected(now + 70)
    pol.disconnected(now + 71)
    assert pol.wake_at() == pytest.approx(now + 73.0)  # a lost link: the reconnect backoff


def test_a_refused_login_waits_the_long_backoff_only_after_the_epoch_probe() -> None:
    pol = make(gateways=("gw-a",), random=MAX, epoch_probe=2, reconnect_base=2.0, backoff_cap=8.0)
    pol.start(0.0)
    assert pol.login_refused(0.1) == [(CONNECT, 1)] and pol.login_refused(0.2) == [(CONNECT, 2)]
    assert pol.login_refused(0.3) == [] and pol.wake_at() == pytest.approx(8.3)  # U(0, cap): long
    assert pol.tick(8.2) == [] and pol.tick(8.3) == [(CONNECT, 0)]


def test_a_refused_login_probes_the_next_epochs_at_once_then_backs_off_from_the_committed_one() -> None:
    pol = make(gateways=("gw-a",), random=MAX, epoch=3, epoch_probe=2, reconnect_base=2.0)
    run(pol, [
        ("start", (0.0,), [(CONNECT, 3)]),
        ("login_refused", (0.1,), [(CONNECT, 4)]),  # P_3 refused: P_4 at once
        ("login_refused", (0.2,), [(CONNECT, 5)]),
        ("login_refused", (0.3,), []),  # the probe is bounded: back to 3 after the long backoff
        ("tick", (8.3,), [(CONNECT, 3)]),  # U(0, backoff_cap = 8)
        ("login_refused", (8.4,), [(CONNECT, 4)]),
    ])
    assert pol.stats["login_epoch_probes"] == 3 and pol.epoch == 3


def test_an_accepted_probe_login_is_a_trial_committed_only_by_a_handshake_under_it() -> None:
    pol = make(gateways=("gw-a",), random=ZERO, epoch=3, epoch_probe=4)
    pol.start(0.0)
    pol.login_refused(0.1)
    pol.login_refused(0.2)  # the device was offline over two bumps: P_5 is the broker's
    run(pol, [
        ("connected", (0.3,), [(SAVE,), (HELLO, "gw-a", 5, 0)]),  # counters from epoch 3's sequence
    ])
    assert pol.epoch == 3 and "5" not in pol.state().split("\n")[0]  # nothing of epoch 5 written
    run(pol, [
        ("rejected", ("gw-a", "timeout", None, 1.0), [(HELLO, "gw-a", 5, 1)]),  # a failure commits nothing
        ("disconnected", (1.5,), [(CONNECT, 5)]),  # a reconnect keeps the accepted login's epoch
        ("connected", (1.6,), [(HELLO, "gw-a", 5, 2)]),
        ("authenticated", ("gw-a", 100.0, 1.7), [(SAVE,)]),  # adopted: one write
    ])
    assert pol.epoch == 5 and pol.state().split("\n")[0] == "5"
    assert pol.disconnected(2.0) == [(CONNECT, 5)]


def test_a_restart_forgets_an_unconfirmed_login_epoch() -> None:
    pol = make(gateways=("gw-a",), random=ZERO, epoch=3)
    pol.start(0.0)
    pol.login_refused(0.1)
    pol.connected(0.2)
    again = make(gateways=("gw-a",), random=ZERO, state=pol.state())
    assert again.start(5.0) == [(CONNECT, 3)]


def test_session_survives_a_reconnect() -> None:
    pol = make(random=ZERO)
    pol.connected(0.0)
    pol.authenticated("gw-a", 100.0, 0.1)
    assert kinds(pol.disconnected(10.0)) == [(CONNECT, 0)]  # a zero draw: at once
    assert pol.connected(10.5) == [] and pol.has_session(10.5)


# -- counters ------------------------------------------------------------------------------------


def test_counters_are_reserved_in_blocks_and_skip_after_restart() -> None:
    pol = make(gateways=("gw-a",), block=16, answer_timeout=1.0, random=ZERO)
    saves, counters = [], []
    for now in range(20):
        for a in (pol.connected(0.0) if now == 0 else pol.tick(float(now) * 2)):
            if a[0] == SAVE:
                saves.append(a[1])
            elif a[0] == HELLO:
                counters.append(a[3])
    assert counters == list(range(len(counters))) and len(counters) >= 17
    assert [p.parse_counters(s)[1] for s in saves] == [{("gw-a", 0): 15}, {("gw-a", 0): 31}]
    # A crash right after reserving: the next process starts past the block, never reusing one.
    again = make(gateways=("gw-a",), block=16, state=saves[-1])
    assert kinds(again.connected(0.0)) == [(SAVE,), (HELLO, "gw-a", 0, 32)]


@given(st.lists(st.sampled_from(["hello", "restart", "fail"]), max_size=80), st.integers(1, 20))
def test_counters_never_repeat_across_restarts(ops: list[str], block: int) -> None:
    saved = None
    pol = make(gateways=("g",), block=block)
    now, seen = 0.0, []
    for op in ["restart", *ops]:
        now += 100.0
        if op == "restart":
            pol = make(gateways=("g",), block=block, state=saved)
            actions = pol.connected(now)
        elif op == "fail":
            actions = pol.tick(now)
        else:
            actions = pol.reauth(now) + pol.tick(now)
        for a in actions:
            if a[0] == SAVE:
                saved = a[1]
            elif a[0] == HELLO:
                assert saved is not None and a[3] <= p.parse_counters(saved)[1][("g", 0)]  # written ahead
                seen.append(a[3])
    assert seen == sorted(set(seen))


def test_counter_file_format() -> None:
    text = p.format_counters(2, {("gw-b", 2): 47, ("gw-a", 2): 15})
    assert text == "2\ngw-a 2 15\ngw-b 2 47\n"
    assert p.parse_counters(text) == (2, {("gw-a", 2): 15, ("gw-b", 2): 47})
    assert make(state=text, epoch=1).epoch == 2 and make(state=text, epoch=5).epoch == 5
    for bad in ("", "x\n", "1\ngw-a 1\n", "1\ngw-a 1 x\n", "-1\n", "1\ngw 1 -4\n"):
        with pytest.raises(ValueError):
            p.parse_counters(bad)


def test_counters_exhausted_is_an_error_not_a_wrap() -> None:
    pol = make(gateways=("g",), state=p.format_counters(0, {("g", 0): 0xFFFFFFFF}))
    with pytest.raises(OverflowError):
        pol.connected(0.0)


# -- backoff ---------------------------------------------------------------------------------------


@given(st.floats(0.01, 5), st.floats(1, 300), st.randoms(use_true_random=False))
def test_backoff_full_jitter_within_capped_exponential_ceiling(
    base: float, cap: float, rnd: _random.Random
) -> None:
    cap = max(cap, base)
    pol = make(gateways=("g",), random=rnd.randbytes, backoff_base=base, backoff_cap=cap)
    for n in range(40):
        d = p.backoff_delay(base, cap, n, pol._random)
        assert 0 <= d <= min(cap, base * 2**n)


def test_backoff_spreads_a_fleet() -> None:
    # After a broker restart, 2,000 agents' first reconnects are uniform over [0, reconnect_base]: no wave.
    import os

    sample = []
    for _ in range(2000):
        pol = make(random=os.urandom, reconnect_base=1.0)
        pol.start(0.0)
        pol.connected(0.0)
        pol.disconnected(0.0)
        sample.append(pol.wake_at())
    assert all(0 <= d <= 1 for d in sample)
    quarters = [sum(1 for d in sample if q / 4 <= d < (q + 1) / 4) for q in range(4)]
    assert min(quarters) > 380  # ~500 each


def test_bad_settings_are_refused() -> None:
    for kw in ({"block": 0}, {"backoff_base": 0}, {"backoff_cap": 0.1}, {"reconnect_base": 0}):
        with pytest.raises(ValueError):
            make(**kw)
    with pytest.raises(ValueError):
        AgentPolicy((), MAX)
