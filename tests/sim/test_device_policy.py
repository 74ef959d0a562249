"""The simulator's device takes each HELLO's epoch and counter from the core's agent policy (no broker
needed: what it would send is checked, not sent)."""

from __future__ import annotations

import pytest

from firmware_sim.device import SimDevice
from gateway.mqtt import MqttConnectionLost
from ledger_bridge.enrollment import ProvisionedDevice


def _device(clock: list[float], **kw: object) -> SimDevice:
    identity = ProvisionedDevice.generate(model="sim", serial="SN-POLICY", firmware_hash=bytes(32))
    return SimDevice(identity, gateway_id="gw-a", host="127.0.0.1", port=1, clock=lambda: clock[0], **kw)


def test_counters_grow_from_the_configured_one_and_epoch_hints_wait_for_a_success() -> None:
    clock = [0.0]
    dev = _device(clock, counter=5, epoch=1)
    assert dev._next_hello(0.0) == ("gw-a", 1, 6) and dev.counter == 6
    dev._learn(dev.policy.rejected("gw-a", "stale_epoch", 2, 0.1))  # the hint: tried next, not committed
    assert dev.epoch == 1
    # a hint costs no flash write: the trial epoch's counter continues the committed epoch's sequence
    assert dev._next_hello(0.2) == ("gw-a", 2, 7)
    dev._learn(dev.policy.authenticated("gw-a", 1000.0, 0.3))
    assert dev.epoch == 2 and dev.flash.startswith("2\n")


def test_a_gateway_without_a_session_starts_at_most_one_handshake() -> None:
    clock = [0.0]
    dev = _device(clock)
    hello = dev._next_hello(0.0)
    dev._learn(dev.policy.authenticated(hello[0], 1000.0, 0.5))
    clock[0] = 1.0
    assert not dev.no_session()  # right after a success: ignored
    clock[0] = 60.0
    assert dev.no_session() and not dev.no_session()
    assert dev._next_hello(60.0) == ("gw-a", 0, 2)  # the handshake the signal started


class _BrokenLink:
    """A client whose link broke under the device (what a kill mid-handshake leaves behind)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        raise MqttConnectionLost("connection lost")


@pytest.mark.asyncio
async def test_a_link_broken_under_a_handshake_does_not_leave_the_policy_waiting_for_ever() -> None:
    """Found by the campaign: the HELLO's publish failed, the policy's attempt stayed in flight (the
    simulator's answer timeout is the caller's), and the device never started a handshake again."""
    clock = [0.0]
    dev = _device(clock)
    dev.client = _BrokenLink()  # type: ignore[assignment]
    with pytest.raises(MqttConnectionLost):
        await dev.authenticate(timeout=1.0)
    assert dev.policy.attempt is None and not dev.policy.online
    clock[0] = 1.0
    assert dev._next_hello(1.0) == ("gw-a", 0, 2)  # at once, once connected again
