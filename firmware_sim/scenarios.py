"""The simulator's scenarios: each one small coroutine over a :class:`~firmware_sim.fleet.SiteAccess`.

Every scenario takes fresh enrolled identities, runs, and returns a
:class:`~firmware_sim.report.ScenarioResult` whose ``checks`` say whether the system behaved as the
protocol requires: honest devices authenticate and their data is verified; every attack is refused
for its own reason (``docs/PROTOCOL.md`` sections 4, 7 and 8). ``SCENARIOS`` maps the CLI names to
them; ``requires`` says which optional power of the site a scenario needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from device_agent.core import events, topics
from gateway.mqtt import MqttConnectError, MqttError

from .device import SimDevice
from .fleet import SiteAccess, gather_limited
from .report import ScenarioResult

__all__ = ["SCENARIOS", "ScenarioParams", "run_scenario"]

RESULT_TYPE = 0x14  # the header byte of a RESULT: a session granted


@dataclass(frozen=True, kw_only=True)
class ScenarioParams:
    devices: int = 20  # for steady, churn, broker_restart, clock_skew
    attackers: int = 2  # for the attack scenarios: devices attacked (each its own identity)
    seconds: float = 5.0  # how long steady and churn run
    data_interval: float = 1.0  # seconds between a device's data messages
    settle: float = 5.0  # how long to wait for the gateway's verdicts to be observable


Scenario = Callable[[SiteAccess, ScenarioParams, ScenarioResult], Awaitable[None]]


def _outcome(result: object) -> str:
    if isinstance(result, events.Authenticated):
        return "authenticated"
    return str(getattr(result, "reason", "unexpected"))


async def _close_all(devs: list[SimDevice]) -> None:
    async def close(d: SimDevice) -> None:
        try:
            await asyncio.wait_for(d.close(), 5)
        except (MqttError, OSError, TimeoutError):
            pass

    await gather_limited([close(d) for d in devs])


async def _verified(site: SiteAccess, devs: list[SimDevice], expected: int, settle: float) -> int | None:
    """Data messages of ``devs`` the gateway verified, waiting up to ``settle`` s for ``expected``."""
    obs = site.observer
    if obs is None:
        return None
    hexes = [d.hex for d in devs]
    deadline = time.monotonic() + settle
    while True:
        seen = sum(obs.per_device[h] for h in hexes)
        if seen >= expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


def _record(result: ScenarioResult, devs: list[SimDevice], outcomes: list[object]) -> None:
    result.devices = len(devs)
    for o in outcomes:
        result.outcomes[_outcome(o)] += 1
    for d in devs:
        result.latencies_ms.extend(d.stats.latencies_ms)


async def _connect_and_authenticate(site: SiteAccess, dev: SimDevice) -> object:
    if not await site.connect(dev):
        site.stats.failed += 1
        return events.Rejected(dev.device_id, "connect_failed")
    return await site.authenticate(dev)


# ---- honest fleets ----
async def steady(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Connect (paced), authenticate, send data every ``data_interval`` s for ``seconds`` s."""
    devs = [site.device(i) for i in site.take(p.devices)]
    sent = [0] * len(devs)
    end = time.monotonic() + p.seconds

    async def live(k: int, dev: SimDevice) -> object:
        outcome = await _connect_and_authenticate(site, dev)
        if not isinstance(outcome, events.Authenticated):
            return outcome
        while True:
            if site.send(dev, "telemetry", b'{"seq": %d}' % sent[k]):
                sent[k] += 1
            remaining = end - time.monotonic()
            if remaining <= 0:
                return outcome
            await asyncio.sleep(min(remaining + 0.001, p.data_interval * site.rng.uniform(0.8, 1.2)))

    outcomes = await gather_limited([live(k, d) for k, d in enumerate(devs)])
    _record(result, devs, outcomes)
    result.messages_sent = sum(sent)
    result.messages_verified = await _verified(site, devs, result.messages_sent, p.settle)
    await _close_all(devs)
    result.check("all devices authenticated", result.outcomes["authenticated"] == len(devs))
    if result.messages_verified is not None:
        result.check("all data verified", result.messages_verified == result.messages_sent)


async def clock_skew(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Devices whose clocks are off by up to ±2 days: the protocol uses no time, so nothing changes."""
    ids = site.take(p.devices)
    offsets = [site.rng.uniform(-2 * 86400, 2 * 86400) for _ in ids]
    devs = [
        site.device(i, clock=lambda off=off: time.monotonic() + off)
        for i, off in zip(ids, offsets, strict=True)
    ]

    async def one(dev: SimDevice) -> object:
        outcome = await _connect_and_authenticate(site, dev)
        if isinstance(outcome, events.Authenticated) and site.send(dev, "telemetry", b"skewed"):
            result.messages_sent += 1
        return outcome

    outcomes = await gather_limited([one(d) for d in devs])
    _record(result, devs, outcomes)
    result.messages_verified = await _verified(site, devs, result.messages_sent, p.settle)
    await _close_all(devs)
    result.figures["max_skew_h"] = round(max(abs(o) for o in offsets) / 3600, 1) if offsets else 0
    result.check("skewed devices all authenticated", result.outcomes["authenticated"] == len(devs))
    if result.messages_verified is not None:
        result.check("skewed devices' data verified", result.messages_verified == result.messages_sent)


async def churn(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Devices disconnect, reconnect and re-authenticate again and again for ``seconds`` s."""
    devs = [site.device(i) for i in site.take(p.devices)]
    outcomes: list[object] = []
    end = time.monotonic() + p.seconds
    cycles = [0]

    async def cycle(dev: SimDevice) -> None:
        while True:
            outcome = await _connect_and_authenticate(site, dev)
            outcomes.append(outcome)
            cycles[0] += 1
            if isinstance(outcome, events.Authenticated) and site.send(dev, "telemetry", b"churn"):
                result.messages_sent += 1
            await asyncio.sleep(site.rng.uniform(0.3, 1.5))
            await dev.close()
            if time.monotonic() >= end:
                return
            await asyncio.sleep(site.rng.uniform(0.2, 1.0))

    await gather_limited([cycle(d) for d in devs])
    _record(result, devs, outcomes)
    result.messages_verified = await _verified(site, devs, result.messages_sent, p.settle)
    result.figures["sessions"] = cycles[0]
    result.check("every reconnection re-authenticated", result.outcomes["authenticated"] == len(outcomes))
    result.check("devices reconnected more than once", cycles[0] > len(devs))
    if result.messages_verified is not None:
        result.check("all data verified", result.messages_verified == result.messages_sent)


async def broker_restart(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Restart the broker under a connected fleet; devices come back with jittered exponential backoff."""
    assert site.restart_broker is not None
    devs = [site.device(i) for i in site.take(p.devices)]
    first = await gather_limited([_connect_and_authenticate(site, d) for d in devs])
    ready = [d for d, o in zip(devs, first, strict=True) if isinstance(o, events.Authenticated)]
    rng = site.rng
    retries = [0]

    async def come_back(dev: SimDevice) -> object:
        assert dev.client is not None
        await asyncio.shield(dev.client.closed)
        for attempt in range(12):
            await asyncio.sleep(site.backoff.delay(attempt, rng))  # the agents wait before each dial
            try:
                await dev.connect(timeout=10.0)
            except (MqttError, OSError):
                site.stats.connect_errors += 1
                continue
            site.stats.connected_once()
            # the gateway may be back later than the broker: a lost HELLO times out, and the device
            # tries again after a backoff, as the agents do
            for retry in range(5):
                outcome = await site.authenticate(dev, timeout=3.0)
                if isinstance(outcome, events.Authenticated):
                    return outcome
                retries[0] += 1
                await asyncio.sleep(site.backoff.delay(retry, rng))
            return outcome
        return events.Rejected(dev.device_id, "connect_failed")

    watchers = [asyncio.ensure_future(come_back(d)) for d in ready]
    t0 = time.monotonic()
    await site.restart_broker()
    outcomes = await asyncio.gather(*watchers)
    for dev, outcome in zip(ready, outcomes, strict=True):  # the observer is back by now too
        if isinstance(outcome, events.Authenticated) and site.send(dev, "telemetry", b"back"):
            result.messages_sent += 1
    spread = max((t - t0 for t in site.stats.connect_times if t >= t0), default=0.0)
    _record(result, devs, outcomes)
    result.messages_verified = await _verified(site, ready, result.messages_sent, p.settle + 10)
    await _close_all(devs)
    peak = site.stats.peak_connects_per_s(since=t0)
    result.figures.update(
        reconnect_peak_per_s=peak, reconnect_spread_s=round(spread, 2), handshake_retries=retries[0]
    )
    result.check("fleet authenticated before the restart", len(ready) == len(devs))
    result.check("every device re-authenticated after it", result.outcomes["authenticated"] == len(ready))
    if result.messages_verified is not None:
        result.check("data after the restart verified", result.messages_verified == result.messages_sent)


# ---- attacks ----
async def replay(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """An attacker on the path captures HELLO, PROOF and DATA and replays them: no session, no data."""
    devs = [site.device(i) for i in site.take(p.attackers)]
    dropped_before = await site.metric("data_dropped", "replay")
    granted_after_replay = [0]
    replayed = 0
    data_sent = 0

    async def attack(dev: SimDevice) -> object:
        nonlocal replayed, data_sent
        outcome = await _connect_and_authenticate(site, dev)
        if not isinstance(outcome, events.Authenticated) or dev.client is None or dev.session is None:
            return outcome
        hello, proof = dev.sent_messages[-2], dev.sent_messages[-1]
        topic = topics.data(dev.gateway_id, dev.hex, "telemetry")
        captured = dev.session.seal(b"telemetry", b"genuine reading")
        dev.replay(topic, captured)  # the genuine message, once
        data_sent += 1
        honest = dev.client.on_message

        def spy(t: bytes, payload: bytes) -> None:
            parsed = topics.parse(t)
            if parsed is not None and parsed[3] == topics.DOWN and payload[:1] == bytes([RESULT_TYPE]):
                granted_after_replay[0] += 1
            if honest is not None:
                honest(t, payload)

        dev.client.on_message = spy
        for _ in range(3):
            dev.replay(topic, captured)
        dev.replay(dev.up, hello)
        await asyncio.sleep(0.2)  # the gateway answers the replayed HELLO with a probe challenge
        dev.replay(dev.up, proof)
        replayed += 5
        return outcome

    outcomes = await gather_limited([attack(d) for d in devs])
    _record(result, devs, outcomes)
    await asyncio.sleep(1.0)
    result.messages_sent = data_sent
    result.messages_verified = await _verified(site, devs, data_sent, p.settle)
    await _close_all(devs)
    result.outcomes["replayed_messages"] = replayed
    result.check("devices authenticated before the attack", result.outcomes["authenticated"] == len(devs))
    result.check("no session granted to a replay", granted_after_replay[0] == 0)
    if result.messages_verified is not None:
        result.check("no replayed data accepted", result.messages_verified == data_sent)
    dropped = await site.metric("data_dropped", "replay")
    if dropped is not None and dropped_before is not None:  # the gateway's counters are cumulative
        dropped -= dropped_before
        result.figures["gateway_data_dropped_replay"] = dropped
        result.check("gateway counted the replayed data", dropped >= 3 * len(devs))


async def clone(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Two devices with one identity: the one behind answers a probe challenge and is caught (clone)."""
    ids = site.take(p.attackers)
    detected_before = await site.metric("clone_detected", "")
    outcomes: list[object] = []
    originals: list[SimDevice] = []
    for identity in ids:
        original = site.device(identity)
        originals.append(original)
        outcomes.append(await _connect_and_authenticate(site, original))
        await original.close()
        twin = site.device(identity)  # same secret, counter still at 0: it reuses counter 1
        originals.append(twin)
        outcome = await _connect_and_authenticate(site, twin)
        result.outcomes[f"clone:{_outcome(outcome)}"] += 1
        await twin.close()
    _record(result, originals, outcomes)
    result.devices = len(ids)
    result.check("originals authenticated", result.outcomes["authenticated"] == len(ids))
    result.check("every clone refused as clone", result.outcomes["clone:clone"] == len(ids))
    detected = await site.metric("clone_detected", "")
    if detected is not None and detected_before is not None:
        detected -= detected_before
        result.figures["gateway_clone_detected"] = detected
        result.check("gateway raised clone_detected", detected >= len(ids))


async def revoked(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """The owner revokes a device on the ledger mid-session: the broker cuts it off and refuses it."""
    assert site.owner is not None
    devs = [site.device(i) for i in site.take(p.attackers)]
    outcomes = await gather_limited([_connect_and_authenticate(site, d) for d in devs])
    cut_times: list[float] = []
    refused = 0
    for dev in devs:
        if dev.client is None or not dev.client.is_open:
            continue
        t0 = time.monotonic()
        await site.owner.revoke(dev.device_id)
        try:
            await asyncio.wait_for(asyncio.shield(dev.client.closed), 15)
            cut_times.append(time.monotonic() - t0)
        except TimeoutError:
            continue
        try:
            await dev.connect(timeout=5)
        except MqttConnectError:
            refused += 1
        else:
            await dev.close()
    _record(result, devs, outcomes)
    result.outcomes["cut_off"] = len(cut_times)
    result.outcomes["reconnect_refused"] = refused
    if cut_times:
        result.figures["cut_off_s_max"] = round(max(cut_times), 2)
    await _close_all(devs)
    result.check("devices authenticated before revocation", result.outcomes["authenticated"] == len(devs))
    result.check("every revoked device cut off", len(cut_times) == len(devs))
    result.check("revoked devices refused at the broker", refused == len(devs))


async def _single_attempt(site: SiteAccess, devs: list[SimDevice], result: ScenarioResult) -> None:
    outcomes = await gather_limited([_connect_and_authenticate(site, d) for d in devs])
    _record(result, devs, outcomes)
    await _close_all(devs)


async def firmware_mismatch(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """Devices that derive their keys from another firmware image than the registered one: bad_otp."""
    other = hashlib.sha256(b"tampered firmware image").digest()
    devs = [site.device(i, firmware_hash=other) for i in site.take(p.attackers)]
    await _single_attempt(site, devs, result)
    result.check("every mismatched device refused as bad_otp", result.outcomes["bad_otp"] == len(devs))


async def counter_window(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """A counter that jumped far past the look-ahead window (a long outage's retries): accepted at
    once, no lockout (the gateway reports the jump as ``counter_resync``; it used to refuse it)."""
    devs = [site.device(i, counter=site.window * 50) for i in site.take(p.attackers)]
    await _single_attempt(site, devs, result)
    result.check("every jumped counter accepted (no lockout)", result.outcomes["authenticated"] == len(devs))
    result.check("no counter_window refusal", result.outcomes["counter_window"] == 0)


async def _authenticate_until(site: SiteAccess, dev: SimDevice, seconds: float) -> object:
    """Connect and authenticate, retrying while the gateway has not taken the new keys yet."""
    deadline = time.monotonic() + seconds
    outcome: object = None
    while True:
        if dev.client is None or not dev.client.is_open:
            if not await site.connect(dev):
                return events.Rejected(dev.device_id, "connect_failed")
        outcome = await site.authenticate(dev)
        if isinstance(outcome, events.Authenticated) or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.5 + site.rng.uniform(0, 0.5))


async def firmware_update(site: SiteAccess, p: ScenarioParams, result: ScenarioResult) -> None:
    """A new image for part of the fleet: devices authenticate on image 1.0; the maintainer records 2.0
    (epoch + 1) and the owner re-seals every gateway's key; the devices on 2.0 authenticate under the new
    epoch and their data verifies; one device still on 1.0 is refused as bad_otp."""
    assert site.update_firmware is not None
    ids = site.take(p.attackers + 1)
    before = [site.device(i) for i in ids]
    outcomes = await gather_limited([_connect_and_authenticate(site, d) for d in before])
    await _close_all(before)
    result.outcomes["authenticated_on_old_image"] = sum(isinstance(o, events.Authenticated) for o in outcomes)
    t0 = time.monotonic()
    updated = await site.update_firmware(ids, hashlib.sha256(b"simulated firmware 2.0").digest())
    result.figures["record_and_reseal_s"] = round(time.monotonic() - t0, 2)
    # counters only grow: each device goes on after the one its first handshake used
    nxt = site.initial_counter + 1
    after = [site.device(ident, epoch=epoch, counter=nxt) for ident, epoch in updated[:-1]]
    stale_ident, stale_epoch = ids[-1], updated[-1][1]
    stale = site.device(stale_ident, epoch=stale_epoch, counter=nxt)
    outcomes = await gather_limited([_authenticate_until(site, d, p.settle + 10) for d in after])
    _record(result, after, outcomes)
    for d, o in zip(after, outcomes, strict=True):
        if isinstance(o, events.Authenticated) and site.send(d, "telemetry", b"image 2.0"):
            result.messages_sent += 1
    result.messages_verified = await _verified(site, after, result.messages_sent, p.settle)
    old_outcome = await _connect_and_authenticate(site, stale)
    result.outcomes["old_image_" + _outcome(old_outcome)] += 1
    await _close_all([*after, stale])
    before_ok = result.outcomes["authenticated_on_old_image"] == len(ids)
    result.check("devices authenticated on the old image first", before_ok)
    result.check("every updated device authenticated under the new epoch",
                 result.outcomes["authenticated"] == len(after) and all(e > 0 for _, e in updated))
    if result.messages_verified is not None:
        result.check("all data from the new image verified", result.messages_verified == result.messages_sent)
    result.check("a device on the old image refused as bad_otp", result.outcomes["old_image_bad_otp"] == 1)


SCENARIOS: dict[str, Scenario] = {
    "steady": steady,
    "churn": churn,
    "broker_restart": broker_restart,
    "clock_skew": clock_skew,
    "replay": replay,
    "clone": clone,
    "revoked": revoked,
    "firmware_mismatch": firmware_mismatch,
    "counter_window": counter_window,
    "firmware_update": firmware_update,
}

# what each scenario needs from the site beyond a broker, a gateway and identities
REQUIRES: dict[str, str] = {
    "broker_restart": "restart_broker",
    "revoked": "owner",
    "firmware_update": "update_firmware",
}


def identities_needed(name: str, p: ScenarioParams) -> int:
    if name == "firmware_update":
        return p.attackers + 1
    return p.devices if name in ("steady", "churn", "broker_restart", "clock_skew") else p.attackers


async def run_scenario(site: SiteAccess, name: str, params: ScenarioParams) -> ScenarioResult:
    """Run one scenario by name; a missing power of the site is a failed check, not an exception."""
    result = ScenarioResult(name=name)
    needed = REQUIRES.get(name)
    started = time.monotonic()
    if needed is not None and getattr(site, needed) is None:
        result.check(f"site provides {needed}", False)
        return result
    await SCENARIOS[name](site, params, result)
    result.seconds = time.monotonic() - started
    return result
