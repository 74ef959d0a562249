"""Conformance: a device's whole life on chain, on every backend (eth-tester and anvil)."""

from __future__ import annotations

import hashlib
import os

import pytest

from ledger_bridge import DeviceState, LedgerRevert, policy_key

from .conftest import Actors
from .helpers import FIRMWARE, claim_code, commitment, device_id, gateway_id, registration, sealed_key


@pytest.mark.asyncio
async def test_full_lifecycle(channel: Actors) -> None:
    ledger, mfr, owner, new_owner = channel.ledger, channel.manufacturer, channel.owner, channel.new_owner
    devs = [device_id(n) for n in range(1, 6)]
    outcomes = await mfr.register_many([registration(d) for d in devs])
    assert len(outcomes) == 1
    dev = devs[0]

    record = await ledger.device(dev)
    assert record.state is DeviceState.MANUFACTURED
    assert record.manufacturer == mfr.address
    assert record.firmware_hash == FIRMWARE
    assert record.epoch == 0

    await owner.claim(dev, claim_code(dev))
    assert (await ledger.device(dev)).owner == owner.address
    await owner.activate(dev)
    assert await ledger.device_state(dev) == (DeviceState.ACTIVE, 0)

    # firmware update by an approved maintainer changes the identity: epoch 1
    await owner.approve_maintainer(dev, channel.maintainer.address)
    new_fw = hashlib.sha256(b"firmware 1.1.0").digest()
    await channel.maintainer.record_firmware(dev, new_fw)
    record = await ledger.device(dev)
    assert (record.firmware_hash, record.epoch) == (new_fw, 1)

    # a gateway, its sealed key for the current epoch, and a policy
    gw = gateway_id(1)
    await channel.operator.register_gateway(
        gw, x25519_public_key=os.urandom(32), account=channel.gateway.address
    )
    assert (await ledger.gateway(gw)).operator == channel.operator.address
    sealed = sealed_key()
    await owner.authorize_gateway(dev, gw, sealed_key=sealed, key_commitment=commitment(sealed))
    grant = await ledger.grant(dev, gw)
    assert (grant.sealed_key, grant.epoch, grant.current) == (sealed, 1, True)
    pid = hashlib.sha256(b"sensors").digest()
    await owner.define_policy(pid, publish=["telemetry", "status"], subscribe=["config"])
    await owner.set_policy(dev, pid)
    key = policy_key(owner.address, pid)  # policies live in their author's namespace
    assert (await ledger.device(dev)).policy_id == key
    assert (await ledger.policy(key)).publish_streams == ("telemetry", "status")

    # suspend and resume; deauthorizing bumps the epoch and invalidates every key
    await owner.suspend(dev)
    assert (await ledger.device_state(dev))[0] is DeviceState.SUSPENDED
    await owner.activate(dev)
    await owner.deauthorize_gateway(dev, gw)
    assert await ledger.device_state(dev) == (DeviceState.ACTIVE, 2)
    assert not await ledger.is_authorized(dev, gw)

    # re-publish for the new epoch, then transfer: epoch 3, the old key is stale again
    await owner.authorize_gateway(dev, gw, sealed_key=sealed, key_commitment=commitment(sealed))
    assert await ledger.is_authorized(dev, gw)
    await owner.transfer(dev, new_owner.address)
    record = await ledger.device(dev)
    assert (record.state, record.epoch, record.pending_owner) == (
        DeviceState.TRANSFERRED,
        3,
        new_owner.address,
    )
    assert not await ledger.is_authorized(dev, gw)
    await new_owner.accept_transfer(dev)
    record = await ledger.device(dev)
    assert (record.state, record.owner, record.epoch) == (DeviceState.CLAIMED, new_owner.address, 3)
    # the previous owner's private policy does not follow the device (its author could steer it)
    assert record.policy_id == bytes(32)
    # the previous owner's maintainer approval does not carry over
    assert not await ledger.maintainer_approved(dev, channel.maintainer.address)
    with pytest.raises(LedgerRevert) as refused:
        await owner.activate(dev)
    assert refused.value.error == "NotOwner"

    # audit evidence from the gateway's own account
    root = hashlib.sha256(b"batch 1").digest()
    await channel.gateway.anchor(gw, merkle_root=root, count=10, first_seq=1, last_seq=10)
    anchored = await ledger.anchor(root, gateway_id=gw)
    assert (anchored.gateway_id, anchored.count, anchored.first_seq, anchored.last_seq) == (gw, 10, 1, 10)
    # a clone alert needs a gateway the device's owner authorized for the current epoch
    await new_owner.authorize_gateway(dev, gw, sealed_key=sealed, key_commitment=commitment(sealed))
    await channel.gateway.clone_alert(dev, gw, counter=7)
    assert await ledger.clone_alert_count(dev) == 1

    # final states
    await new_owner.decommission(dev)
    assert (await ledger.device_state(dev))[0] is DeviceState.DECOMMISSIONED
    await owner.claim(devs[1], claim_code(devs[1]))
    await owner.revoke(devs[1])
    assert await ledger.device_state(devs[1]) == (DeviceState.REVOKED, 1)
    await channel.admin.revoke(devs[2])  # never claimed: only an admin can revoke it
    assert (await ledger.device_state(devs[2]))[0] is DeviceState.REVOKED

    history = [e.name for e in await ledger.history(dev)]
    assert history == [
        "DeviceRegistered",
        "DeviceClaimed",
        "DeviceActivated",
        "MaintainerApproved",
        "FirmwareRecorded",
        "GatewayAuthorized",
        "PolicySet",
        "DeviceSuspended",
        "DeviceActivated",
        "GatewayDeauthorized",
        "GatewayAuthorized",
        "TransferStarted",
        "TransferAccepted",
        "PolicySet",  # the previous owner's private policy is dropped
        "GatewayAuthorized",
        "CloneAlert",
        "DeviceDecommissioned",
    ]


@pytest.mark.asyncio
async def test_group_authorization_in_one_transaction(channel: Actors) -> None:
    devs = [device_id(n, tag=0xA0) for n in range(1, 21)]
    await channel.manufacturer.register_many([registration(d) for d in devs])
    for d in devs:
        await channel.owner.claim(d, claim_code(d))
    gw = gateway_id(2)
    await channel.operator.register_gateway(
        gw, x25519_public_key=os.urandom(32), account=channel.gateway.address
    )
    keys = [sealed_key() for _ in devs]
    await channel.owner.authorize_gateway_many(
        gw, device_ids=devs, sealed_keys=keys, key_commitments=[commitment(k) for k in keys]
    )
    assert all([await channel.ledger.is_authorized(d, gw) for d in devs])
    assert (await channel.ledger.grant(devs[7], gw)).sealed_key == keys[7]
    with pytest.raises(ValueError, match="differ in length"):
        await channel.owner.authorize_gateway_many(
            gw, device_ids=devs, sealed_keys=keys[:3], key_commitments=[commitment(k) for k in keys]
        )
    # the contract refuses it on its own as well
    fn = channel.ledger.registry.functions.authorizeGatewayMany(
        devs, gw, keys[:3], [commitment(k) for k in keys]
    )
    with pytest.raises(LedgerRevert, match="LengthMismatch: expected=20, actual=3"):
        await channel.ledger.transact(channel.owner._signer, fn, gas=2_000_000)


@pytest.mark.asyncio
async def test_batches_split_to_fit_and_report_progress(channel: Actors) -> None:
    devs = [device_id(n, tag=0xB0) for n in range(1, 26)]
    seen: list[tuple[int, int]] = []
    outcomes = await channel.manufacturer.register_many(
        [registration(d) for d in devs],
        batch_size=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(outcomes) == 3
    assert seen == [(10, 25), (20, 25), (25, 25)]
    assert (await channel.ledger.device_state(devs[-1]))[0] is DeviceState.MANUFACTURED
    with pytest.raises(LedgerRevert) as dup:
        await channel.manufacturer.register_many(
            [registration(device_id(99, tag=0xB0)), registration(devs[3])]
        )
    assert str(dup.value) == f"registerMany: DeviceExists: device 0x{devs[3].hex()} is already registered"
    # a refused batch changes nothing
    assert (await channel.ledger.device_state(device_id(99, tag=0xB0)))[0] is DeviceState.UNREGISTERED


@pytest.mark.asyncio
async def test_anchor_rules(channel: Actors) -> None:
    gw = gateway_id(3)
    await channel.operator.register_gateway(
        gw, x25519_public_key=os.urandom(32), account=channel.gateway.address
    )
    g = channel.gateway
    await g.anchor(gw, merkle_root=os.urandom(32), count=5, first_seq=0, last_seq=4)
    with pytest.raises(LedgerRevert) as replay:
        await g.anchor(gw, merkle_root=os.urandom(32), count=5, first_seq=4, last_seq=8)
    assert replay.value.error == "SequenceReplay"
    assert "already anchored up to sequence 4; batch starts at 4" in str(replay.value)
    with pytest.raises(LedgerRevert, match="BadBatch"):
        await g.anchor(gw, merkle_root=os.urandom(32), count=6, first_seq=5, last_seq=9)
    root = os.urandom(32)
    await g.anchor(gw, merkle_root=root, count=3, first_seq=5, last_seq=9)  # gaps are allowed
    with pytest.raises(LedgerRevert, match="AnchorExists"):
        await g.anchor(gw, merkle_root=root, count=1, first_seq=10, last_seq=10)
    with pytest.raises(LedgerRevert, match="UnknownAnchor"):
        await channel.ledger.anchor(os.urandom(32), gateway_id=gw)


@pytest.mark.asyncio
async def test_history_ignores_other_ids_that_share_the_topic(channel: Actors) -> None:
    dev = device_id(1, tag=0xAB)
    await channel.manufacturer.register_device(registration(dev))
    lookalike = dev.ljust(32, b"\0")  # a gateway id whose topic equals the device's
    await channel.operator.register_gateway(
        lookalike, x25519_public_key=os.urandom(32), account=channel.gateway.address
    )
    await channel.gateway.anchor(lookalike, merkle_root=os.urandom(32), count=1, first_seq=1, last_seq=1)
    assert [e.name for e in await channel.ledger.history(dev)] == ["DeviceRegistered"]


@pytest.mark.asyncio
async def test_too_little_gas_is_reported_as_such(channel: Actors) -> None:
    dev = device_id(1, tag=0xAC)
    await channel.manufacturer.register_device(registration(dev))
    fn = channel.ledger.registry.functions.claim(dev, claim_code(dev))
    with pytest.raises(LedgerRevert) as exc:
        await channel.ledger.transact(channel.owner._signer, fn, gas=25_000)
    assert exc.value.error == "OutOfGas"
    assert str(exc.value) == "claim: ran out of gas (25000)"
    await channel.owner.claim(dev, claim_code(dev))  # the nonce was consumed and is tracked: next one works


@pytest.mark.asyncio
@pytest.mark.parametrize("failure", ["timeout", "duplicate"])
async def test_a_send_that_fails_after_the_node_took_it_keeps_the_nonce(
    channel: Actors, failure: str
) -> None:
    """A loaded node answers a large batch late: the client's request times out though the node took
    the transaction. The ledger must learn its fate from its hash, and the next transaction of the
    same sender must not reuse its nonce ("nonce too low")."""
    import requests

    eth = channel.ledger.w3.eth
    real = eth.send_raw_transaction
    calls = []

    def late(raw: bytes) -> object:
        result = real(raw)
        calls.append(result)
        if failure == "timeout":
            raise requests.exceptions.ReadTimeout("the node answered after the client's timeout")
        return real(raw)  # a client that sent it again (web3's retry): the node refuses the copy

    eth.send_raw_transaction = late  # type: ignore[method-assign]
    try:
        first, second = device_id(1, tag=0xAD), device_id(2, tag=0xAD)
        await channel.manufacturer.register_device(registration(first))
    finally:
        eth.send_raw_transaction = real  # type: ignore[method-assign]
    assert calls, "the send went through the patched call"
    await channel.manufacturer.register_device(registration(second))
    for dev in (first, second):
        assert (await channel.ledger.device_state(dev))[0] == DeviceState.MANUFACTURED
