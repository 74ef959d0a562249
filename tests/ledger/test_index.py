"""The local identity index on both backends: fold of events, restart and catch-up, pushes, reorgs."""

from __future__ import annotations

import hashlib

import pytest

from ledger_bridge import DeviceState
from ledger_bridge.index import IdentityIndex, LedgerSource, SyncReport, SyncWindow, onchain_gateway_id
from tests.ledger.conftest import Actors
from tests.ledger.helpers import claim_code, commitment, device_id, registration, sealed_key

GW = b"gw-index"
GW32 = onchain_gateway_id(GW)
POLICY = hashlib.sha256(b"policy sensors").digest()


async def _enroll(ch: Actors, n: int) -> list[bytes]:
    ids = [device_id(i, tag=0xE1) for i in range(n)]
    await ch.manufacturer.register_many([registration(d) for d in ids])
    await ch.operator.register_gateway(GW32, x25519_public_key=bytes(range(32)), account=ch.gateway.address)
    await ch.owner.define_policy(POLICY, publish=["telemetry", "status"], subscribe=["config"])
    for d in ids:
        await ch.owner.claim(d, claim_code(d))
        await ch.owner.activate(d)
        await ch.owner.set_policy(d, POLICY)
    await ch.owner.authorize_gateway_many(
        GW32,
        device_ids=ids,
        sealed_keys=[sealed_key() for _ in ids],
        key_commitments=[commitment(d) for d in ids],
    )
    return ids


@pytest.mark.asyncio
async def test_index_folds_events_and_resumes_after_restart(channel: Actors, tmp_path):
    ch = channel
    source = LedgerSource(ch.ledger)
    path = tmp_path / "index.sqlite"
    index = IdentityIndex(path, gateway_id=GW, start_block=ch.ledger.channel.deployed_block)
    ids = await _enroll(ch, 3)
    report = await index.sync(source)
    assert set(report.changed) == set(ids)
    view = index.device(ids[0])
    assert view is not None and view.state is DeviceState.ACTIVE and view.servable
    assert view.publish == ("telemetry", "status") and view.subscribe == ("config",)
    assert sorted(index.servable_ids()) == sorted(ids)
    assert index.gateway(GW32) == (bytes(range(32)), ch.gateway.address, ch.operator.address)
    assert index.device(device_id(99, tag=0xE1)) is None
    index.close()

    # While the gateway is down: one suspended, one transferred (epoch bump: its grant goes stale).
    await ch.owner.suspend(ids[0])
    await ch.owner.transfer(ids[1], ch.new_owner.address)
    index = IdentityIndex(path, gateway_id=GW)
    seen = []
    index.subscribe(lambda r: seen.append(r.changed))
    report = await index.sync(source)
    assert set(report.changed) == {ids[0], ids[1]} and seen == [report.changed]
    assert index.device(ids[0]).state is DeviceState.SUSPENDED and not index.device(ids[0]).servable
    moved = index.device(ids[1])
    assert moved.state is DeviceState.TRANSFERRED and moved.epoch == 1 and moved.grant.epoch == 0
    assert index.servable_ids() == [ids[2]]
    assert (await index.sync(source)).changed == ()  # nothing new: no push
    assert len(seen) == 1
    index.close()


@pytest.mark.asyncio
async def test_losses_of_rights_are_pushed_first(channel: Actors, tmp_path):
    ch = channel
    ids = await _enroll(ch, 3)
    index = IdentityIndex(tmp_path / "i.sqlite", gateway_id=GW, start_block=ch.ledger.channel.deployed_block)
    await index.sync(LedgerSource(ch.ledger))
    await ch.owner.define_policy(hashlib.sha256(b"p2").digest(), publish=["t"], subscribe=[])
    await ch.owner.set_policy(ids[2], hashlib.sha256(b"p2").digest())  # a gain, first on chain
    await ch.owner.revoke(ids[1])  # a loss, later on chain
    report = await index.sync(LedgerSource(ch.ledger))
    assert report.changed == (ids[1], ids[2])
    assert index.device(ids[1]).state is DeviceState.REVOKED
    assert index.device(ids[2]).publish == ("t",)


@pytest.mark.asyncio
async def test_confirmations_hold_back_recent_blocks(channel: Actors, tmp_path):
    ch = channel
    index = IdentityIndex(
        tmp_path / "i.sqlite", gateway_id=GW, confirmations=3, start_block=ch.ledger.channel.deployed_block
    )
    await ch.manufacturer.register_device(registration(device_id(1, tag=0xE2)))
    await index.sync(LedgerSource(ch.ledger))
    assert index.device(device_id(1, tag=0xE2)) is None  # not yet 3 blocks deep
    for i in range(3):
        await ch.manufacturer.register_device(registration(device_id(10 + i, tag=0xE2)))
    await index.sync(LedgerSource(ch.ledger))
    assert index.device(device_id(1, tag=0xE2)) is not None
    assert index.device(device_id(12, tag=0xE2)) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["anvil"], indirect=True)  # reorgs made with evm_snapshot / evm_revert
async def test_reorg_on_anvil_rolls_back_orphaned_events(channel: Actors, tmp_path):
    from ledger_bridge import Role, Signer

    ch = channel
    w3 = ch.ledger.w3
    fresh = ch.ledger.actor(Signer.generate(label="manufacturer-2"))
    await ch.ledger.fund(fresh.address, 10**18)
    await ch.admin.grant_role(Role.MANUFACTURER, fresh.address)
    index = IdentityIndex(tmp_path / "i.sqlite", gateway_id=GW, start_block=ch.ledger.channel.deployed_block)
    source = LedgerSource(ch.ledger)
    await index.sync(source)
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    orphan, survivor = device_id(1, tag=0xE3), device_id(2, tag=0xE3)
    await ch.manufacturer.register_device(registration(orphan))
    await index.sync(source)
    assert index.device(orphan) is not None
    assert w3.provider.make_request("evm_revert", [snap])["result"] is True
    await fresh.register_device(registration(survivor))
    await fresh.register_device(registration(device_id(3, tag=0xE3)))  # the new branch is longer
    report = await index.sync(source)
    assert report.reorg_depth >= 1
    assert index.device(orphan) is None
    assert index.device(survivor) is not None and index.device(device_id(3, tag=0xE3)) is not None


@pytest.mark.asyncio
async def test_index_agrees_with_the_contract_after_every_kind_of_event(channel: Actors, tmp_path):
    """A fold that missed an event kind would disagree with the contract's own view of some device."""
    ch = channel
    ids = await _enroll(ch, 8)
    await ch.owner.suspend(ids[0])
    await ch.owner.transfer(ids[1], ch.new_owner.address)
    await ch.new_owner.accept_transfer(ids[1])
    await ch.owner.transfer(ids[2], ch.new_owner.address)
    await ch.owner.cancel_transfer(ids[2])
    await ch.owner.revoke(ids[3])
    await ch.owner.decommission(ids[4])
    await ch.owner.approve_maintainer(ids[5], ch.maintainer.address)
    await ch.maintainer.record_firmware(ids[5], hashlib.sha256(b"fw 2").digest())
    await ch.owner.deauthorize_gateway(ids[6], GW32)
    await ch.manufacturer.register_device(registration(device_id(50, tag=0xE1)))
    index = IdentityIndex(tmp_path / "i.sqlite", gateway_id=GW, start_block=ch.ledger.channel.deployed_block)
    await index.sync(LedgerSource(ch.ledger))
    for did in [*ids, device_id(50, tag=0xE1)]:
        on_chain = await ch.ledger.device(did)
        view = index.device(did)
        assert (view.state, view.epoch, view.firmware_hash) == (
            on_chain.state,
            on_chain.epoch,
            on_chain.firmware_hash,
        ), did.hex()
        grant_current = (await ch.ledger.grant(did, GW32)).current if view.grant else False
        assert view.servable == (on_chain.state is DeviceState.ACTIVE and grant_current), did.hex()


@pytest.mark.asyncio
async def test_a_full_disk_keeps_nothing_of_a_sync_and_the_next_one_catches_up(channel: Actors, tmp_path):
    """SQLite's own "database or disk is full" (max_page_count caps the file as a full disk would):
    the sync raises IndexStorageError, the watermark and the devices stay as they were, and once there
    is room the same events are fetched and folded."""
    from ledger_bridge.index import IndexStorageError

    ch = channel
    source = LedgerSource(ch.ledger)
    index = IdentityIndex(
        tmp_path / "index.sqlite", gateway_id=GW, start_block=ch.ledger.channel.deployed_block
    )
    await index.sync(source)
    before = index.watermark
    pages = index._db.execute("PRAGMA page_count").fetchone()[0]
    index._db.execute(f"PRAGMA max_page_count = {pages}")
    ids = await _enroll(ch, 8)
    with pytest.raises(IndexStorageError, match="full"):
        await index.sync(source)
    assert index.watermark == before and index.device(ids[0]) is None
    index._db.execute("PRAGMA max_page_count = 1073741823")
    report = await index.sync(source)
    assert set(report.changed) == set(ids) and index.device(ids[0]).state is DeviceState.ACTIVE
    index.close()


@pytest.mark.asyncio
async def test_the_index_keeps_policy_names_from_policy_defined(channel: Actors, tmp_path):
    """PolicyDefined carries the author's name for a policy (its id is policy_key(author, name), which
    names nothing): the index keeps it, and so does an index written before the column existed."""
    import sqlite3

    from ledger_bridge.model import policy_key

    ch = channel
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE policies (id BLOB PRIMARY KEY, publish TEXT NOT NULL, subscribe TEXT NOT NULL,"
               " author TEXT NOT NULL) WITHOUT ROWID")
    db.close()
    name = b"sensors".ljust(32, b"\0")
    d = device_id(1, tag=0xE2)
    await ch.manufacturer.register_many([registration(d)])
    await ch.owner.define_policy(name, publish=["telemetry"], subscribe=[])
    await ch.owner.claim(d, claim_code(d))
    await ch.owner.set_policy(d, name)
    pid = policy_key(ch.owner.address, name)
    assert await ch.ledger.policy_name(pid) == name
    assert await ch.ledger.policy_name(bytes(32)) is None
    for path in (tmp_path / "new.sqlite", old):
        index = IdentityIndex(path, gateway_id=GW, start_block=ch.ledger.channel.deployed_block)
        await index.sync(LedgerSource(ch.ledger))
        row = index.device_row(d)
        assert row is not None and row["policy"] == pid and row["policy_name"] == "sensors"
        _, rows = index.search(prefix=d.hex())
        assert rows[0]["policy_name"] == "sensors"
        index.close()


def test_a_sync_window_shrinks_on_timeouts_and_grows_back_as_syncs_complete() -> None:
    w = SyncWindow(largest=5000)
    for expected in (625, 78, 9, 1, 1):
        w.timed_out()
        assert w.blocks == expected
    # a sync that covered its whole window says more is waiting; one that reached the head does not
    assert w.completed(SyncReport(from_block=10, to_block=10, events=3, changed=())) is True
    assert w.blocks == 2
    assert w.completed(SyncReport(from_block=11, to_block=11, events=0, changed=())) is False
    for _ in range(20):
        w.completed(SyncReport(from_block=1, to_block=1, events=0, changed=()))
    assert w.blocks == 5000
    with pytest.raises(ValueError):
        SyncWindow(largest=0)
