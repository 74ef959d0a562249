"""Conformance: every role restriction, each tested both ways (refused for the wrong actor first, then
allowed for the right one), on eth-tester and anvil."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from ledger_bridge import DeviceState, LedgerRevert, Role, TxOutcome, policy_key
from ledger_bridge.actor import ActorHandle

from .conftest import Actors
from .helpers import claim_code, commitment, device_id, gateway_id, registration, sealed_key

GW = gateway_id(20)
POLICY = hashlib.sha256(b"roles policy").digest()


@dataclass(frozen=True)
class Case:
    """`act(actor)` is refused for `refused` with `error`, then succeeds for `allowed`."""

    act: Callable[[Actors, ActorHandle, bytes], Awaitable[TxOutcome]]
    refused: str
    allowed: str
    error: str
    setup: tuple[str, ...] = ("claim",)


def _gw_key(ch: Actors, who: ActorHandle, dev: bytes) -> Awaitable[TxOutcome]:
    return who.authorize_gateway(dev, GW, sealed_key=sealed_key(), key_commitment=commitment(dev))


CASES: dict[str, Case] = {
    "grantRole needs ADMIN": Case(
        lambda ch, who, dev: who.grant_role(Role.MANUFACTURER, ch.stranger.address),
        "manufacturer",
        "admin",
        "AccessControlUnauthorizedAccount",
        (),
    ),
    "registerDevice needs MANUFACTURER": Case(
        lambda ch, who, dev: who.register_device(
            registration(device_id(int.from_bytes(dev, "big") % 1000, 0xF1))
        ),
        "operator",
        "manufacturer",
        "AccessControlUnauthorizedAccount",
        (),
    ),
    "registerMany needs MANUFACTURER": Case(
        lambda ch, who, dev: who.register_many(
            [registration(device_id(1, 0xF2)), registration(device_id(2, 0xF2))]
        ),
        "admin",
        "manufacturer",
        "AccessControlUnauthorizedAccount",
        (),
    ),
    "registerGateway needs OPERATOR": Case(
        lambda ch, who, dev: who.register_gateway(
            gateway_id(21), x25519_public_key=os.urandom(32), account=ch.gateway.address
        ),
        "manufacturer",
        "operator",
        "AccessControlUnauthorizedAccount",
        (),
    ),
    "claim needs the claim code": Case(
        lambda ch, who, dev: who.claim(dev, claim_code(dev) if who is ch.owner else b"guess"),
        "stranger",
        "owner",
        "BadClaimCode",
        (),
    ),
    "onboardMany needs each claim code": Case(
        lambda ch, who, dev: who.onboard_many(
            [dev], [claim_code(dev) if who is ch.owner else b"guess"], POLICY
        ),
        "stranger",
        "owner",
        "BadClaimCode",
        (),
    ),
    "activate is the owner's": Case(lambda ch, who, dev: who.activate(dev), "stranger", "owner", "NotOwner"),
    "an admin cannot activate": Case(lambda ch, who, dev: who.activate(dev), "admin", "owner", "NotOwner"),
    "suspend: owner": Case(
        lambda ch, who, dev: who.suspend(dev), "stranger", "owner", "NotOwnerOrAdmin", ("claim", "activate")
    ),
    "suspend: admin": Case(
        lambda ch, who, dev: who.suspend(dev),
        "manufacturer",
        "admin",
        "NotOwnerOrAdmin",
        ("claim", "activate"),
    ),
    "transfer is the owner's": Case(
        lambda ch, who, dev: who.transfer(dev, ch.new_owner.address), "new_owner", "owner", "NotOwner"
    ),
    "acceptTransfer is the new owner's": Case(
        lambda ch, who, dev: who.accept_transfer(dev),
        "stranger",
        "new_owner",
        "NotPendingOwner",
        ("claim", "transfer"),
    ),
    "cancelTransfer is the owner's": Case(
        lambda ch, who, dev: who.cancel_transfer(dev), "new_owner", "owner", "NotOwner", ("claim", "transfer")
    ),
    "revoke: owner": Case(lambda ch, who, dev: who.revoke(dev), "stranger", "owner", "NotOwnerOrAdmin"),
    "revoke: admin": Case(lambda ch, who, dev: who.revoke(dev), "operator", "admin", "NotOwnerOrAdmin"),
    "decommission is the owner's": Case(
        lambda ch, who, dev: who.decommission(dev), "admin", "owner", "NotOwner"
    ),
    "approveMaintainer is the owner's": Case(
        lambda ch, who, dev: who.approve_maintainer(dev, ch.maintainer.address),
        "maintainer",
        "owner",
        "NotOwner",
    ),
    "recordFirmware needs the owner's approval": Case(
        lambda ch, who, dev: who.record_firmware(dev, hashlib.sha256(b"fw2").digest()),
        "maintainer",
        "maintainer",
        "MaintainerNotApproved",
        ("claim", "approve-after-refusal"),
    ),
    "recordFirmware needs MAINTAINER": Case(
        lambda ch, who, dev: who.record_firmware(dev, hashlib.sha256(b"fw2").digest()),
        "stranger",
        "maintainer",
        "AccessControlUnauthorizedAccount",
        ("claim", "approve-both"),
    ),
    "authorizeGateway is the owner's": Case(_gw_key, "operator", "owner", "NotOwner"),
    "deauthorizeGateway is the owner's": Case(
        lambda ch, who, dev: who.deauthorize_gateway(dev, GW),
        "gateway",
        "owner",
        "NotOwner",
        ("claim", "authorize"),
    ),
    "setPolicy is the owner's": Case(
        lambda ch, who, dev: who.set_policy(dev, POLICY), "stranger", "owner", "NotOwner"
    ),
    "rotateGatewayKey is the gateway operator's": Case(
        lambda ch, who, dev: who.rotate_gateway_key(GW, x25519_public_key=hashlib.sha256(dev).digest()),
        "stranger",
        "operator",
        "NotGatewayOperator",
        (),
    ),
    "changeGatewayAccount is the gateway operator's": Case(
        lambda ch, who, dev: who.change_gateway_account(GW, ch.stranger.address),
        "gateway",
        "operator",
        "NotGatewayOperator",
        (),
    ),
    "removeGateway is the gateway operator's (or an admin's)": Case(
        lambda ch, who, dev: who.remove_gateway(GW), "owner", "admin", "NotGatewayOperator", ()
    ),
    "anchor: only the gateway's account": Case(
        lambda ch, who, dev: who.anchor(
            GW, merkle_root=hashlib.sha256(dev).digest(), count=1, first_seq=1, last_seq=1
        ),
        "operator",
        "gateway",
        "NotGatewayAccount",
        (),
    ),
    "cloneAlert: only the gateway's account": Case(
        lambda ch, who, dev: who.clone_alert(dev, GW, counter=3),
        "owner",
        "gateway",
        "NotGatewayAccount",
        ("claim", "authorize"),
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(CASES))
async def test_role_restriction(channel: Actors, name: str) -> None:
    case = CASES[name]
    ch = channel
    dev = device_id(list(CASES).index(name) + 1, tag=0xF0)
    await ch.manufacturer.register_device(registration(dev))
    await ch.operator.register_gateway(GW, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    await ch.owner.define_policy(POLICY, publish=["telemetry"], subscribe=["config"])
    for step in case.setup:
        if step == "claim":
            await ch.owner.claim(dev, claim_code(dev))
        elif step == "activate":
            await ch.owner.activate(dev)
        elif step == "transfer":
            await ch.owner.transfer(dev, ch.new_owner.address)
        elif step == "authorize":
            await _gw_key(ch, ch.owner, dev)
        elif step == "approve-both":
            await ch.owner.approve_maintainer(dev, ch.maintainer.address)
            await ch.owner.approve_maintainer(dev, ch.stranger.address)
    refused: ActorHandle = getattr(ch, case.refused)
    allowed: ActorHandle = getattr(ch, case.allowed)
    before = await ch.ledger.device_state(dev)

    with pytest.raises(LedgerRevert) as exc:
        await case.act(ch, refused, dev)
    assert exc.value.error == case.error, str(exc.value)
    assert await ch.ledger.device_state(dev) == before
    if case.error == "AccessControlUnauthorizedAccount":
        assert f"{refused.address} lacks the role" in str(exc.value)
    if "approve-after-refusal" in case.setup:
        await ch.owner.approve_maintainer(dev, ch.maintainer.address)

    await case.act(ch, allowed, dev)


@pytest.mark.asyncio
async def test_role_grants_are_visible_and_revocable(channel: Actors) -> None:
    ch = channel
    assert await ch.ledger.has_role(Role.ADMIN, ch.admin.address)
    assert await ch.ledger.has_role(Role.MANUFACTURER, ch.manufacturer.address)
    assert not await ch.ledger.has_role(Role.MANUFACTURER, ch.operator.address)
    await ch.admin.revoke_role(Role.MANUFACTURER, ch.manufacturer.address)
    with pytest.raises(LedgerRevert) as exc:
        await ch.manufacturer.register_device(registration(device_id(1, tag=0xF3)))
    assert str(exc.value) == (
        f"registerDevice: AccessControlUnauthorizedAccount: {ch.manufacturer.address} "
        "lacks the role MANUFACTURER_ROLE"
    )


@pytest.mark.asyncio
async def test_previous_owner_loses_every_right_after_transfer(channel: Actors) -> None:
    ch = channel
    dev = device_id(1, tag=0xF4)
    await ch.manufacturer.register_device(registration(dev))
    await ch.owner.claim(dev, claim_code(dev))
    await ch.owner.approve_maintainer(dev, ch.maintainer.address)
    await ch.owner.transfer(dev, ch.new_owner.address)
    await ch.new_owner.accept_transfer(dev)
    for attempt in (
        ch.owner.activate(dev),
        ch.owner.transfer(dev, ch.stranger.address),
        ch.owner.revoke(dev),
    ):
        with pytest.raises(LedgerRevert) as exc:
            await attempt
        assert exc.value.error in ("NotOwner", "NotOwnerOrAdmin")
    with pytest.raises(LedgerRevert, match="has not approved maintainer"):
        await ch.maintainer.record_firmware(dev, hashlib.sha256(b"fw").digest())
    assert (await ch.ledger.device_state(dev))[0] is DeviceState.CLAIMED


@pytest.mark.asyncio
async def test_onboard_many_is_all_or_nothing(channel: Actors) -> None:
    ch = channel
    devs = [device_id(i, tag=0xF5) for i in range(3)]
    await ch.manufacturer.register_many([registration(d) for d in devs])
    await ch.owner.define_policy(POLICY, publish=["telemetry"], subscribe=["config"])
    codes = [claim_code(d) for d in devs]
    with pytest.raises(LedgerRevert) as exc:
        await ch.owner.onboard_many(devs, [*codes[:2], b"wrong"], POLICY)
    assert exc.value.error == "BadClaimCode"
    for d in devs:
        assert (await ch.ledger.device_state(d))[0] is DeviceState.MANUFACTURED
    await ch.owner.onboard_many(devs, codes, POLICY)
    for d in devs:
        record = await ch.ledger.device(d)
        assert (record.state, record.owner, record.policy_id) == (
            DeviceState.ACTIVE,
            ch.owner.address,
            policy_key(ch.owner.address, POLICY),
        )
