"""The re-key window on the ledger side (docs/PROTOCOL.md 2.3), on every backend:

- ``registerDeviceKeyMany``: ``registerDeviceKey``'s rules for each device, all or none, the refused
  device named in the revert; ``register --csv``'s import uses it (one transaction per batch);
- ``startRekey``: only the owner of a device whose re-key is pending names a registered gateway; the
  event reaches the identity index, and the named gateway's ``DeviceTable`` turns it into a broker
  account for the re-key topics only (``EnrollRekey``, password from S), which ``confirmRekey`` ends.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device_agent.core import keys
from gateway.broker import EnrollRekey
from gateway.counters import CounterStore
from gateway.devices import DeviceTable
from gateway.settings import ProtocolSettings
from ledger_bridge import DeviceState, LedgerRevert
from ledger_bridge.csv_import import register_rows
from ledger_bridge.index import IdentityIndex, LedgerSource, onchain_gateway_id
from ledger_bridge.model import DeviceRegistration
from ledger_bridge.rekey import start_rekey, window_password
from ledger_bridge.sealing import (
    GatewayKeys,
    SealError,
    public_bytes,
    seal,
    seal_rekey_password,
    unseal,
    unseal_rekey_password,
)

from .conftest import Actors
from .helpers import claim_code, device_id, registration


async def _registered(ch: Actors, n: int, tag: int) -> list[bytes]:
    ids = [device_id(i, tag=tag) for i in range(n)]
    await ch.manufacturer.register_many([registration(d) for d in ids])
    return ids


@pytest.mark.asyncio
async def test_register_device_key_many_is_all_or_none_and_names_the_device(channel: Actors) -> None:
    ch = channel
    ids = await _registered(ch, 5, 0xB1)
    public = [os.urandom(32) for _ in ids]
    # one device already has its key: the batch is refused, naming it, and no other key lands
    await ch.manufacturer.register_device_key(ids[3], public[3])
    with pytest.raises(LedgerRevert) as refused:
        await ch.manufacturer.register_device_key_many(ids, public)
    assert refused.value.error == "DeviceKeyExists" and refused.value.args_by_name["id"] == ids[3]
    for d in ids[:3] + ids[4:]:
        assert await ch.ledger.device_key(d) == (bytes(32), False), d.hex()
    # registerDeviceKey's other rules hold for each device of a batch
    with pytest.raises(LedgerRevert, match="NotManufacturer"):
        await ch.stranger.register_device_key_many(ids[:1], public[:1])
    await ch.owner.claim(ids[4], claim_code(ids[4]))  # a claimed device takes no key any more
    with pytest.raises(LedgerRevert) as claimed:
        await ch.manufacturer.register_device_key_many([ids[0], ids[4]], [public[0], public[4]])
    assert claimed.value.error == "IllegalTransition" and claimed.value.args_by_name["id"] == ids[4]
    with pytest.raises(LedgerRevert, match="EmptyValue"):
        await ch.manufacturer.register_device_key_many([ids[0]], [bytes(32)])
    # the rest in one transaction
    outcomes = await ch.manufacturer.register_device_key_many(ids[:3], public[:3])
    assert len(outcomes) == 1
    for d, k in zip(ids[:3], public[:3], strict=True):
        assert await ch.ledger.device_key(d) == (k, False), d.hex()


@pytest.mark.asyncio
async def test_the_csv_import_registers_device_keys_in_one_transaction_per_batch(channel: Actors) -> None:
    ch = channel
    rows = []
    for i in range(6):
        base = registration(device_id(i, tag=0xB2))
        rows.append((i + 2, DeviceRegistration(
            device_id=base.device_id,
            model=base.model,
            firmware_hash=base.firmware_hash,
            characteristics=base.characteristics,
            claim_hash=base.claim_hash,
            device_key=None if i == 5 else os.urandom(32),
        )))
    before = await ch.ledger.block_number()
    report = await register_rows(ch.manufacturer, rows, batch_size=3)
    assert report.errors == [] and report.registered == 6
    # two batches: registerMany + registerDeviceKeyMany each (the last row has no key)
    assert report.transactions == 4 == await ch.ledger.block_number() - before
    for _, r in rows:
        assert (await ch.ledger.device_key(r.device_id))[0] == (r.device_key or bytes(32))


def test_the_rekey_box_opens_only_as_a_rekey_box_for_its_gateway_device_and_epoch() -> None:
    gw = X25519PrivateKey.generate()
    pub = public_bytes(gw.public_key())
    did, password = device_id(1, tag=0xB3), os.urandom(16)
    box = seal_rekey_password(password, pub, did, b"gw-1", 4)
    assert len(box) == 64
    assert unseal_rekey_password(box, gw, did, b"gw-1", 4) == password
    for other in ((did, b"gw-2", 4), (did, b"gw-1", 5), (device_id(2, tag=0xB3), b"gw-1", 4)):
        with pytest.raises(SealError):
            unseal_rekey_password(box, gw, *other)
    with pytest.raises(SealError):
        unseal_rekey_password(box, X25519PrivateKey.generate(), did, b"gw-1", 4)
    # a grant's box (K_dg and P) is not a re-key box, whatever its length: another label
    grant = seal(GatewayKeys(k_dg=os.urandom(32), broker_password=password), pub, did, b"gw-1", 4)
    with pytest.raises(SealError):
        unseal_rekey_password(grant[:32] + grant[-32:], gw, did, b"gw-1", 4)
    with pytest.raises(SealError):
        unseal(box + bytes(32), gw, did, b"gw-1", 4)


@pytest.mark.asyncio
async def test_start_rekey_gives_the_named_gateway_a_rekey_only_account_until_confirm(
    channel: Actors, tmp_path: Path
) -> None:
    ch = channel
    [did] = await _registered(ch, 1, 0xB4)
    secret = os.urandom(32)  # S: the previous owner has it too
    await ch.manufacturer.register_device_key(did, os.urandom(32))
    gw_keys = {g: X25519PrivateKey.generate() for g in (b"gw-a", b"gw-b")}
    for g, k in gw_keys.items():
        await ch.operator.register_gateway(
            onchain_gateway_id(g), x25519_public_key=public_bytes(k.public_key()), account=ch.gateway.address
        )
    await ch.owner.claim(did, claim_code(did))
    await ch.owner.activate(did)
    with pytest.raises(LedgerRevert) as early:  # nothing pending before a transfer
        await start_rekey(ch.ledger, ch.owner, did, b"gw-a", secret=secret)
    assert early.value.error == "NoRekeyPending"
    await ch.owner.transfer(did, ch.new_owner.address)
    await ch.new_owner.accept_transfer(did)
    await ch.new_owner.activate(did)
    # only the new owner names a gateway, and only a registered one
    with pytest.raises(LedgerRevert, match="NotOwner"):
        await start_rekey(ch.ledger, ch.owner, did, b"gw-a", secret=secret)
    with pytest.raises(LedgerRevert, match="UnknownGateway"):
        await ch.new_owner.start_rekey(did, onchain_gateway_id(b"gw-z"), os.urandom(64))
    with pytest.raises(LedgerRevert, match="BadSealedKey"):
        await ch.new_owner.start_rekey(did, onchain_gateway_id(b"gw-a"), b"")

    tables: dict[bytes, DeviceTable] = {}
    for g, k in gw_keys.items():
        index = IdentityIndex(
            tmp_path / f"{g.decode()}.sqlite", gateway_id=g, start_block=ch.ledger.channel.deployed_block
        )
        await index.sync(LedgerSource(ch.ledger))
        tables[g] = DeviceTable(
            gateway_id=g,
            index=index,
            counters=CounterStore(tmp_path / f"{g.decode()}.counters"),
            private_key=k,
            protocol=ProtocolSettings(),
        )
        tables[g].load_all()
        assert tables[g].enrollments() == []  # transferred: nobody serves it, no broker account

    async def sync() -> dict[bytes, tuple[list[bytes], list[object]]]:
        out = {}
        for g, table in tables.items():
            report = await table.index.sync(LedgerSource(ch.ledger))
            out[g] = table.refresh(report.changed, since_block=report.from_block)
        return out

    await start_rekey(ch.ledger, ch.new_owner, did, b"gw-a", secret=secret)
    changes = await sync()
    assert changes[b"gw-b"] == ([], [])  # not named: nothing
    cut, enroll = changes[b"gw-a"]
    assert cut == [] and [type(e) for e in enroll] == [EnrollRekey]
    [account] = enroll
    assert isinstance(account, EnrollRekey)
    assert (account.device_id, account.gateway_id) == (did.hex(), "gw-a")
    _, epoch = await ch.ledger.device_state(did)
    expected_password = keys.broker_password(secret, did, epoch)  # P_e from S at the epoch of startRekey
    assert account.secret.reveal() == expected_password == window_password(secret, did, epoch).hex()
    assert did not in tables[b"gw-a"].entries  # no protocol entry: it cannot authenticate here
    # a restart loads it again from the index
    again = DeviceTable(
        gateway_id=b"gw-a",
        index=tables[b"gw-a"].index,
        counters=tables[b"gw-a"].counters,
        private_key=gw_keys[b"gw-a"],
        protocol=ProtocolSettings(),
    )
    again.load_all()
    assert [(type(e), e.device_id) for e in again.enrollments()] == [(EnrollRekey, did.hex())]

    # the owner names the other gateway instead: gw-a cuts its account, gw-b enrols it
    await start_rekey(ch.ledger, ch.new_owner, did, b"gw-b", secret=secret)
    changes = await sync()
    assert changes[b"gw-a"] == ([did], [])
    assert [type(e) for e in changes[b"gw-b"][1]] == [EnrollRekey]

    # suspended: no account (the owner took it off the air); active again: back
    await ch.new_owner.suspend(did)
    assert (await sync())[b"gw-b"] == ([did], [])
    await ch.new_owner.activate(did)
    assert [type(e) for e in (await sync())[b"gw-b"][1]] == [EnrollRekey]

    # confirmRekey moves the epoch: the re-key account is cut off everywhere, nothing takes its place
    await ch.new_owner.confirm_rekey(did, os.urandom(32))
    changes = await sync()
    assert changes[b"gw-b"] == ([did], []) and changes[b"gw-a"] == ([], [])
    assert tables[b"gw-b"].enrollments() == []
    assert (await ch.ledger.device_state(did)) == (DeviceState.ACTIVE, 2)
    with pytest.raises(LedgerRevert) as done:  # and it cannot be named again
        await start_rekey(ch.ledger, ch.new_owner, did, b"gw-a", secret=secret)
    assert done.value.error == "NoRekeyPending"


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["anvil"], indirect=True)  # reorgs made with evm_snapshot / evm_revert
async def test_an_orphaned_start_rekey_is_rolled_back_by_the_index(channel: Actors, tmp_path: Path) -> None:
    ch = channel
    w3 = ch.ledger.w3
    [did, other, another] = await _registered(ch, 3, 0xB5)
    await ch.manufacturer.register_device_key(did, os.urandom(32))
    key = X25519PrivateKey.generate()
    await ch.operator.register_gateway(
        onchain_gateway_id(b"gw-a"),
        x25519_public_key=public_bytes(key.public_key()),
        account=ch.gateway.address,
    )
    await ch.owner.claim(did, claim_code(did))
    await ch.owner.transfer(did, ch.new_owner.address)
    await ch.new_owner.accept_transfer(did)
    start = ch.ledger.channel.deployed_block
    index = IdentityIndex(tmp_path / "i.sqlite", gateway_id=b"gw-a", start_block=start)
    source = LedgerSource(ch.ledger)
    await index.sync(source)
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    await start_rekey(ch.ledger, ch.new_owner, did, b"gw-a", secret=os.urandom(32))
    await index.sync(source)
    view = index.device(did)
    assert view is not None and view.rekeying_here and index.rekey_ids() == [did]
    assert w3.provider.make_request("evm_revert", [snap])["result"] is True
    await ch.owner.claim(other, claim_code(other))  # the new branch is longer
    await ch.owner.claim(another, claim_code(another))
    report = await index.sync(source)
    assert report.reorg_depth >= 1
    view = index.device(did)
    assert view is not None and view.rekey is None and not view.rekeying_here and index.rekey_ids() == []
