"""Conformance: every (lifecycle state, operation) pair on chain agrees with `ledger_bridge.TRANSITIONS`.

Allowed pairs succeed and land in the table's target state; every other pair is refused on chain with
`IllegalTransition` naming the state and the operation. Runs on eth-tester and anvil.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable

import pytest

from ledger_bridge import TRANSITIONS, DeviceState, LedgerRevert, TxOutcome

from .conftest import Actors
from .helpers import claim_code, commitment, device_id, gateway_id, registration, sealed_key

S = DeviceState
GW = gateway_id(10)
POLICY = hashlib.sha256(b"policy").digest()
STATES = [s for s in DeviceState if s is not S.UNREGISTERED]


def operation(ch: Actors, op: str, dev: bytes) -> Awaitable[TxOutcome]:
    """Perform `op` on `dev` as the actor entitled to it, with valid arguments."""
    calls: dict[str, Callable[[], Awaitable[TxOutcome]]] = {
        "claim": lambda: ch.owner.claim(dev, claim_code(dev)),
        "activate": lambda: ch.owner.activate(dev),
        "suspend": lambda: ch.owner.suspend(dev),
        "transfer": lambda: ch.owner.transfer(dev, ch.new_owner.address),
        "acceptTransfer": lambda: ch.new_owner.accept_transfer(dev),
        "cancelTransfer": lambda: ch.owner.cancel_transfer(dev),
        "revoke": lambda: ch.admin.revoke(dev),
        "decommission": lambda: ch.owner.decommission(dev),
        "approveMaintainer": lambda: ch.owner.approve_maintainer(dev, ch.maintainer.address),
        "recordFirmware": lambda: ch.maintainer.record_firmware(dev, hashlib.sha256(dev).digest()),
        "authorizeGateway": lambda: ch.owner.authorize_gateway(
            dev, GW, sealed_key=sealed_key(), key_commitment=commitment(dev)
        ),
        "deauthorizeGateway": lambda: ch.owner.deauthorize_gateway(dev, GW),
        "setPolicy": lambda: ch.owner.set_policy(dev, POLICY),
    }
    return calls[op]()


PATHS: dict[DeviceState, list[str]] = {
    S.MANUFACTURED: [],
    S.CLAIMED: ["claim"],
    S.ACTIVE: ["claim", "activate"],
    S.SUSPENDED: ["claim", "activate", "suspend"],
    S.TRANSFERRED: ["claim", "transfer"],
    S.REVOKED: ["claim", "revoke"],
    S.DECOMMISSIONED: ["claim", "decommission"],
}


@pytest.mark.asyncio
async def test_every_state_and_operation_matches_the_table(channel: Actors) -> None:
    ledger = channel.ledger
    ops = sorted(TRANSITIONS)
    cases = {
        (op, state): device_id(i * 16 + int(state), tag=0xC0) for i, op in enumerate(ops) for state in STATES
    }
    await channel.manufacturer.register_many([registration(d) for d in cases.values()])
    await channel.operator.register_gateway(
        GW, x25519_public_key=os.urandom(32), account=channel.gateway.address
    )
    await channel.owner.define_policy(POLICY, publish=["telemetry"], subscribe=["config"])

    for (op, state), dev in cases.items():
        live = state in (S.CLAIMED, S.ACTIVE, S.SUSPENDED)
        for step in PATHS[state]:
            await operation(channel, step, dev)
            if live and step == "claim":
                # preconditions that are not about the lifecycle, so that only the state decides
                if op == "recordFirmware":
                    await operation(channel, "approveMaintainer", dev)
                if op == "deauthorizeGateway":
                    await operation(channel, "authorizeGateway", dev)
        assert (await ledger.device_state(dev))[0] is state

    refused = 0
    for (op, state), dev in cases.items():
        allowed_from, target = TRANSITIONS[op]
        if state in allowed_from:
            await operation(channel, op, dev)
            assert (await ledger.device_state(dev))[0] is (target or state), (op, state)
        else:
            with pytest.raises(LedgerRevert) as exc:
                await operation(channel, op, dev)
            assert exc.value.error == "IllegalTransition", (op, state, str(exc.value))
            assert (
                str(exc.value)
                == f"{op}: IllegalTransition: device 0x{dev.hex()} is {state.label}, cannot {op}"
            )
            assert (await ledger.device_state(dev))[0] is state
            refused += 1
    assert refused == sum(len(STATES) - len(TRANSITIONS[op][0]) for op in ops)


@pytest.mark.asyncio
async def test_unknown_device_is_refused_for_every_operation(channel: Actors) -> None:
    dev = device_id(1, tag=0xEE)
    for op in sorted(TRANSITIONS):
        with pytest.raises(LedgerRevert) as exc:
            await operation(channel, op, dev)
        assert exc.value.error == "UnknownDevice", op
    with pytest.raises(LedgerRevert, match=f"UnknownDevice: device 0x{dev.hex()} is not registered"):
        await channel.ledger.device(dev)
