"""Contracts scoped to their actors (issue 10, item 3). Each test is a finding against the previous
contracts and fails on them: policy squatting and cross-owner policies, clone alerts from any gateway,
anchors keyed by root alone (front-running), gateways whose key and account could not be rotated or
removed. Run on eth-tester, anvil and the embedded chain."""

from __future__ import annotations

import hashlib
import os

import pytest

from ledger_bridge import DeviceState, LedgerRevert, policy_key
from ledger_bridge.index import IdentityIndex, LedgerSource, onchain_gateway_id

from .conftest import Actors
from .helpers import claim_code, commitment, device_id, registration, sealed_key

pytestmark = pytest.mark.asyncio

DEFAULT = hashlib.sha256(b"default").digest()  # the predictable name everybody would pick
GW = b"gw-scope"
GW32 = onchain_gateway_id(GW)


async def _active(ch: Actors, n: int, tag: int = 0xC1) -> bytes:
    dev = device_id(n, tag=tag)
    await ch.manufacturer.register_device(registration(dev))
    await ch.owner.claim(dev, claim_code(dev))
    await ch.owner.activate(dev)
    return dev


async def _served(ch: Actors, n: int) -> bytes:
    dev = await _active(ch, n)
    if not await _registered(ch):
        await ch.operator.register_gateway(GW32, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    sealed = sealed_key()
    await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    return dev


async def _registered(ch: Actors) -> bool:
    try:
        await ch.ledger.gateway(GW32)
    except LedgerRevert:
        return False
    return True


async def test_a_predictable_policy_id_cannot_be_squatted(channel: Actors) -> None:
    ch = channel
    dev = await _active(ch, 1)
    # a stranger defines "default" first, with streams of its choosing
    await ch.stranger.define_policy(DEFAULT, publish=["exfiltrate"], subscribe=["commands"])
    # the owner still defines its own "default" and gives it to its device: the stranger's is untouched
    await ch.owner.define_policy(DEFAULT, publish=["telemetry"], subscribe=["config"])
    await ch.owner.set_policy(dev, DEFAULT)
    record = await ch.ledger.device(dev)
    assert (
        record.policy_id == policy_key(ch.owner.address, DEFAULT) != policy_key(ch.stranger.address, DEFAULT)
    )
    mine = await ch.ledger.policy(record.policy_id)
    assert (mine.author, mine.publish_streams) == (ch.owner.address, ("telemetry",))
    theirs = await ch.ledger.policy(policy_key(ch.stranger.address, DEFAULT))
    assert theirs.publish_streams == ("exfiltrate",)
    # and the stranger's redefinition of "default" changes nothing for the owner's device
    await ch.stranger.define_policy(DEFAULT, publish=["everything"], subscribe=[])
    assert (await ch.ledger.policy(record.policy_id)).publish_streams == ("telemetry",)


async def test_another_owners_policy_is_refused_unless_shared_and_then_frozen(channel: Actors) -> None:
    ch = channel
    dev = await _active(ch, 2)
    theirs = policy_key(ch.stranger.address, DEFAULT)
    await ch.stranger.define_policy(DEFAULT, publish=["telemetry"], subscribe=[])
    with pytest.raises(LedgerRevert) as refused:
        await ch.owner.use_shared_policy(dev, theirs)
    assert refused.value.error == "PolicyNotShared"
    assert "was not shared with" in str(refused.value)
    with pytest.raises(LedgerRevert) as unknown:  # by name, setPolicy only looks in the owner's namespace
        await ch.owner.set_policy(dev, DEFAULT)
    assert unknown.value.error == "UnknownPolicy"

    await ch.stranger.share_policy(DEFAULT)
    await ch.owner.use_shared_policy(dev, theirs)
    assert (await ch.ledger.device(dev)).policy_id == theirs
    assert (await ch.ledger.policy(theirs)).shared
    # its author can no longer change the streams of other owners' devices
    with pytest.raises(LedgerRevert) as frozen:
        await ch.stranger.define_policy(DEFAULT, publish=["everything"], subscribe=["commands"])
    assert frozen.value.error == "PolicyFrozen"
    assert (await ch.ledger.policy(theirs)).publish_streams == ("telemetry",)


async def test_set_policy_never_takes_another_authors_policy_so_its_author_cannot_steer_the_device(
    channel: Actors,
) -> None:
    """Finding (a), the attack itself: the owner names a policy another account defined. The previous
    contract's setPolicy took any defined id, and the author could then rewrite the device's streams."""
    ch = channel
    dev = await _active(ch, 9)
    await ch.stranger.define_policy(DEFAULT, publish=["telemetry"], subscribe=[])
    with pytest.raises(LedgerRevert) as refused:  # setPolicy looks only in the owner's own namespace
        await ch.owner.set_policy(dev, DEFAULT)
    assert refused.value.error == "UnknownPolicy"
    with pytest.raises(LedgerRevert) as by_id:  # and by the full id only when shared (then frozen)
        await ch.owner.use_shared_policy(dev, policy_key(ch.stranger.address, DEFAULT))
    assert by_id.value.error == "PolicyNotShared"
    await ch.stranger.define_policy(DEFAULT, publish=["everything"], subscribe=["commands"])
    assert (await ch.ledger.device(dev)).policy_id == bytes(32)


async def test_a_previous_owners_private_policy_is_dropped_at_transfer(channel: Actors, tmp_path) -> None:
    """Finding (a) across a transfer: the previous owner stays the author of the device's private policy;
    on the previous contract the policy followed the device, so that author could widen the new owner's
    device's streams whenever it liked."""
    ch = channel
    dev = await _active(ch, 10)
    await ch.owner.define_policy(DEFAULT, publish=["telemetry"], subscribe=[])
    await ch.owner.set_policy(dev, DEFAULT)
    await ch.owner.transfer(dev, ch.new_owner.address)
    await ch.new_owner.accept_transfer(dev)
    await ch.owner.define_policy(DEFAULT, publish=["everything"], subscribe=["commands"])
    record = await ch.ledger.device(dev)
    assert record.policy_id == bytes(32), "the policy its previous owner just rewrote governs the device"
    # and so a gateway grants the device none of those streams
    index = IdentityIndex(tmp_path / "index.sqlite", gateway_id=GW, start_block=0)
    await index.sync(LedgerSource(ch.ledger))
    view = index.device(dev)
    index.close()
    assert view is not None and (view.publish, view.subscribe) == ((), ())
    assert ("PolicySet", bytes(32)) in [
        (e.name, e.args.get("policyId")) for e in await ch.ledger.history(dev)
    ]


async def test_a_shared_policy_survives_a_transfer_a_private_one_does_not(channel: Actors) -> None:
    ch = channel
    dev = await _active(ch, 3)
    await ch.stranger.define_policy(DEFAULT, publish=["telemetry"], subscribe=[])
    await ch.stranger.share_policy(DEFAULT)
    await ch.owner.use_shared_policy(dev, policy_key(ch.stranger.address, DEFAULT))
    await ch.owner.transfer(dev, ch.new_owner.address)
    await ch.new_owner.accept_transfer(dev)
    assert (await ch.ledger.device(dev)).policy_id == policy_key(ch.stranger.address, DEFAULT)


async def test_clone_alert_only_from_a_gateway_authorized_for_the_device(channel: Actors) -> None:
    ch = channel
    dev = await _served(ch, 4)
    other = await _active(ch, 5)  # never authorized for this gateway
    with pytest.raises(LedgerRevert) as refused:
        await ch.gateway.clone_alert(other, GW32, counter=1)
    assert refused.value.error == "NotServingGateway"
    assert await ch.ledger.clone_alert_count(other) == 0
    await ch.gateway.clone_alert(dev, GW32, counter=1)
    assert await ch.ledger.clone_alert_count(dev) == 1
    # once the grant is stale (epoch bumped) the gateway no longer speaks for the device either
    await ch.owner.deauthorize_gateway(dev, GW32)
    with pytest.raises(LedgerRevert, match="NotServingGateway"):
        await ch.gateway.clone_alert(dev, GW32, counter=2)


async def test_anchors_are_keyed_by_gateway_and_root_so_nobody_front_runs_a_root(channel: Actors) -> None:
    ch = channel
    victim, attacker = onchain_gateway_id(b"gw-victim"), onchain_gateway_id(b"gw-attacker")
    await ch.operator.register_gateway(victim, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    await ch.operator.register_gateway(
        attacker, x25519_public_key=os.urandom(32), account=ch.stranger.address
    )
    root = os.urandom(32)
    # the attacker saw the victim's root in the mempool and anchors it first
    await ch.stranger.anchor(attacker, merkle_root=root, count=1, first_seq=1, last_seq=1)
    await ch.gateway.anchor(victim, merkle_root=root, count=7, first_seq=1, last_seq=7)
    mine = await ch.ledger.anchor(root, gateway_id=victim)
    assert (mine.gateway_id, mine.count, mine.last_seq) == (victim, 7, 7)
    assert (await ch.ledger.anchor(root, gateway_id=attacker)).count == 1
    assert [a.merkle_root for a in await ch.ledger.anchors(victim)] == [root]
    assert await ch.ledger.next_anchor_seq(victim) == 8
    with pytest.raises(LedgerRevert) as dup:
        await ch.gateway.anchor(victim, merkle_root=root, count=1, first_seq=8, last_seq=8)
    assert dup.value.error == "AnchorExists"


async def test_a_front_run_root_keeps_the_consoles_inclusion_proof(channel: Actors, tmp_path) -> None:
    """Finding (c) where an auditor meets it: the console proves a record's inclusion under the root its
    gateway anchored, and names that gateway, though others anchored the root first (over another range,
    and over the same range)."""
    from gateway.audit import AuditLog
    from ledger_bridge.console.service import ConsoleService
    from ledger_bridge.operations import id_text

    ch = channel
    victim, attacker = onchain_gateway_id(b"gw-victim"), onchain_gateway_id(b"gw-attacker")
    await ch.operator.register_gateway(victim, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    await ch.operator.register_gateway(
        attacker, x25519_public_key=os.urandom(32), account=ch.stranger.address
    )
    copier = onchain_gateway_id(b"gw-copier")
    await ch.operator.register_gateway(copier, x25519_public_key=os.urandom(32), account=ch.new_owner.address)
    log = AuditLog(tmp_path / "audit.log")
    try:
        for n in range(3):
            log.append("auth_ok", device=f"d{n}")
        batch = log.next_anchor()
        assert batch is not None
        span = {"count": batch.count, "first_seq": batch.first_seq, "last_seq": batch.last_seq}
        await ch.stranger.anchor(attacker, merkle_root=batch.root, count=1, first_seq=1, last_seq=1)
        await ch.new_owner.anchor(copier, merkle_root=batch.root, **span)
        tx = await ch.gateway.anchor(victim, merkle_root=batch.root, **span)
        log.mark_anchored(batch, tx.transaction_hash)
    finally:
        log.close()
    index = IdentityIndex(tmp_path / "index.sqlite", gateway_id=GW, start_block=0)
    console = ConsoleService(ledger=ch.ledger, index=index, audit_logs=[tmp_path / "audit.log"])
    try:
        proof = await console.check_inclusion("audit.log", 2)
    finally:
        index.close()
    assert (proof["included"], proof["problem"], proof["gateway"]) == (True, "", id_text(victim))


async def test_rotating_a_gateway_key_voids_its_grants_until_the_epoch_moves(channel: Actors) -> None:
    ch = channel
    dev = await _served(ch, 6)
    (_, epoch) = await ch.ledger.device_state(dev)
    assert await ch.ledger.is_authorized(dev, GW32)
    new_key = os.urandom(32)
    await ch.operator.rotate_gateway_key(GW32, x25519_public_key=new_key)
    record = await ch.ledger.gateway(GW32)
    assert (record.x25519_public_key, record.generation, record.removed) == (new_key, 1, False)
    # the old key opens the sealed K_dg of this epoch: that grant no longer counts
    assert not await ch.ledger.is_authorized(dev, GW32)
    # and sealing again for the same epoch is refused: the old key's holder would know that K_dg
    sealed = sealed_key()
    with pytest.raises(LedgerRevert) as stale:
        await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    assert stale.value.error == "EpochNotBumped" and "deauthorize it first" in str(stale.value)
    await ch.owner.deauthorize_gateway(dev, GW32)  # accepted for the voided grant: bumps the epoch
    assert await ch.ledger.device_state(dev) == (DeviceState.ACTIVE, epoch + 1)
    await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    grant = await ch.ledger.grant(dev, GW32)
    assert (grant.current, grant.epoch, grant.generation) == (True, epoch + 1, 1)


async def test_a_gateway_account_can_be_changed_and_the_old_one_stops_signing(channel: Actors) -> None:
    ch = channel
    await ch.operator.register_gateway(GW32, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    await ch.operator.change_gateway_account(GW32, ch.stranger.address)
    with pytest.raises(LedgerRevert, match="NotGatewayAccount"):
        await ch.gateway.anchor(GW32, merkle_root=os.urandom(32), count=1, first_seq=1, last_seq=1)
    await ch.stranger.anchor(GW32, merkle_root=os.urandom(32), count=1, first_seq=1, last_seq=1)
    assert (await ch.ledger.gateway(GW32)).account == ch.stranger.address


async def test_a_removed_gateway_loses_its_account_its_grants_and_its_id(channel: Actors) -> None:
    ch = channel
    dev = await _served(ch, 7)
    await ch.operator.remove_gateway(GW32)
    record = await ch.ledger.gateway(GW32)
    assert record.removed and record.account == "0x" + "0" * 40
    assert not await ch.ledger.is_authorized(dev, GW32)
    with pytest.raises(LedgerRevert, match="NotGatewayAccount"):
        await ch.gateway.anchor(GW32, merkle_root=os.urandom(32), count=1, first_seq=1, last_seq=1)
    sealed = sealed_key()
    with pytest.raises(LedgerRevert, match="UnknownGateway"):
        await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    with pytest.raises(LedgerRevert, match="GatewayExists"):
        await ch.operator.register_gateway(GW32, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    with pytest.raises(LedgerRevert, match="UnknownGateway"):
        await ch.operator.rotate_gateway_key(GW32, x25519_public_key=os.urandom(32))


async def test_a_removed_gateways_devices_can_have_their_epoch_bumped(channel: Actors) -> None:
    """Finding (d), the epoch consequence of a removal: the removed gateway still holds this epoch's sealed
    K_dg and P_e, so the owner must be able to move the device's epoch though the grant no longer counts
    (PROTOCOL.md 3.4); once moved, the removed gateway has nothing current and cannot be sealed again."""
    ch = channel
    dev = await _served(ch, 11)
    (_, epoch) = await ch.ledger.device_state(dev)
    await ch.operator.remove_gateway(GW32)
    assert not await ch.ledger.is_authorized(dev, GW32)
    await ch.owner.deauthorize_gateway(dev, GW32)  # accepted for the voided grant of this epoch
    assert await ch.ledger.device_state(dev) == (DeviceState.ACTIVE, epoch + 1)
    with pytest.raises(LedgerRevert) as gone:
        await ch.owner.deauthorize_gateway(dev, GW32)
    assert gone.value.error == "GatewayNotAuthorized"
    sealed = sealed_key()
    with pytest.raises(LedgerRevert) as unknown:
        await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    assert unknown.value.error == "UnknownGateway"


async def test_the_index_follows_rotation_and_removal(channel: Actors, tmp_path) -> None:
    ch = channel
    source = LedgerSource(ch.ledger)
    index = IdentityIndex(
        tmp_path / "index.sqlite", gateway_id=GW, start_block=ch.ledger.channel.deployed_block
    )
    await ch.owner.define_policy(DEFAULT, publish=["telemetry"], subscribe=[])
    dev = await _served(ch, 8)
    await ch.owner.set_policy(dev, DEFAULT)
    await index.sync(source)
    view = index.device(dev)
    assert view is not None and view.servable

    new_key = os.urandom(32)
    await ch.operator.rotate_gateway_key(GW32, x25519_public_key=new_key)
    report = await index.sync(source)
    assert dev in report.changed  # pushed as a loss: the gateway drops the device's session
    view = index.device(dev)
    assert view is not None and view.grant is None and not view.servable
    assert index.gateway(GW32) == (new_key, ch.gateway.address, ch.operator.address)

    await ch.operator.change_gateway_account(GW32, ch.stranger.address)
    await index.sync(source)
    assert index.gateway(GW32) == (new_key, ch.stranger.address, ch.operator.address)

    await ch.owner.deauthorize_gateway(dev, GW32)
    sealed = sealed_key()
    await ch.owner.authorize_gateway(dev, GW32, sealed_key=sealed, key_commitment=commitment(sealed))
    await index.sync(source)
    view = index.device(dev)
    assert view is not None and view.servable

    await ch.operator.remove_gateway(GW32)
    report = await index.sync(source)
    assert dev in report.changed
    view = index.device(dev)
    assert view is not None and not view.servable and index.gateway(GW32) is None
    index.close()
