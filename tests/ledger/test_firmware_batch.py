"""recordFirmwareMany: a fleet's update in one transaction, with recordFirmware's rules for each device
and nothing changed when any device of the batch is refused (eth-tester, anvil, embedded)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from ledger_bridge import DeviceState, LedgerRevert
from ledger_bridge.enrollment import ProvisionedDevice
from ledger_bridge.firmware import device_from_owner_bundle
from ledger_bridge.gas import CALL_GAS, GRANT_STATUS_CELLS

from .conftest import Actors
from .helpers import claim_code, commitment, device_id, gateway_id, registration, sealed_key

FW2 = hashlib.sha256(b"fleet image 2").digest()


async def _claimed(ch: Actors, n: int, tag: int) -> list[bytes]:
    ids = [device_id(i, tag=tag) for i in range(n)]
    await ch.manufacturer.register_many([registration(d) for d in ids])
    for d in ids:
        await ch.owner.claim(d, claim_code(d))
        await ch.owner.activate(d)
    return ids


@pytest.mark.asyncio
async def test_one_transaction_moves_every_device_to_the_new_image_and_epoch(channel: Actors):
    ch = channel
    ids = await _claimed(ch, 5, 0xA1)
    for d in ids:
        await ch.owner.approve_maintainer(d, ch.maintainer.address)
    before = {d: (await ch.ledger.device(d)).epoch for d in ids}
    outcomes = await ch.maintainer.record_firmware_many(ids, FW2)
    assert len(outcomes) == 1
    for d in ids:
        record = await ch.ledger.device(d)
        assert (record.firmware_hash, record.epoch) == (FW2, before[d] + 1), d.hex()
    recorded = [e for e in await ch.ledger.events() if e.name == "FirmwareRecorded"]
    assert sorted(e.args["id"] for e in recorded) == sorted(ids)


@pytest.mark.asyncio
async def test_one_unapproved_device_refuses_the_whole_batch(channel: Actors):
    ch = channel
    ids = await _claimed(ch, 4, 0xA2)
    for d in ids[:-1]:
        await ch.owner.approve_maintainer(d, ch.maintainer.address)
    with pytest.raises(LedgerRevert, match="MaintainerNotApproved"):
        await ch.maintainer.record_firmware_many(ids, FW2)
    for d in ids:
        assert (await ch.ledger.device(d)).firmware_hash != FW2, d.hex()


@pytest.mark.asyncio
async def test_only_a_maintainer_may_record_and_hashes_must_match_the_devices(channel: Actors):
    ch = channel
    ids = await _claimed(ch, 2, 0xA3)
    for d in ids:
        await ch.owner.approve_maintainer(d, ch.maintainer.address)
    with pytest.raises(LedgerRevert, match="AccessControlUnauthorizedAccount"):
        await ch.owner.record_firmware_many(ids, FW2)
    with pytest.raises(ValueError, match="differ in length"):
        await ch.maintainer.record_firmware_many(ids, [FW2])
    with pytest.raises(LedgerRevert, match="EmptyValue"):
        await ch.maintainer.record_firmware_many(ids, [FW2, bytes(32)])
    for d in ids:
        assert (await ch.ledger.device(d)).firmware_hash != FW2, d.hex()


@pytest.mark.asyncio
async def test_grant_status_reads_what_grant_reads_for_many_devices(channel: Actors):
    ch = channel
    ids = await _claimed(ch, 6, 0xA4)
    gw, other = gateway_id(41), gateway_id(42)
    for g in (gw, other):
        await ch.operator.register_gateway(g, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    await ch.owner.authorize_gateway_many(
        gw,
        device_ids=ids[:4],
        sealed_keys=[sealed_key() for _ in ids[:4]],
        key_commitments=[commitment(d) for d in ids[:4]],
    )
    await ch.owner.approve_maintainer(ids[1], ch.maintainer.address)
    await ch.maintainer.record_firmware(ids[1], FW2)  # its grant goes stale
    await ch.owner.suspend(ids[2])
    await ch.owner.revoke(ids[3])
    unknown = device_id(99, tag=0xA4)
    statuses = await ch.ledger.grant_status([*ids, unknown], [gw, other], per_call=4)
    assert [s.device_id for s in statuses] == [*ids, unknown]
    for d, s in zip(ids, statuses, strict=False):
        record = await ch.ledger.device(d)
        assert (s.state, s.epoch, s.firmware_hash) == (record.state, record.epoch, record.firmware_hash)
        for g in (gw, other):
            grant = await ch.ledger.grant(d, g)
            assert (s.granted[g], s.current[g]) == (bool(grant.sealed_key), grant.current), (d.hex(), g)
    assert [s.current[gw] for s in statuses] == [True, False, True, False, False, False, False]
    assert statuses[-1].state is DeviceState.UNREGISTERED and not any(statuses[-1].granted.values())


@pytest.mark.asyncio
async def test_a_default_sized_grant_status_call_fits_the_view_gas(channel: Actors):
    """The bridge sizes grantStatus calls from GRANT_STATUS_CELLS; the worst case (every device granted by
    both gateways) must stay inside CALL_GAS with room to spare, or the reads fail on a real node."""
    ch = channel
    gateways = [gateway_id(43), gateway_id(44)]
    per_call = GRANT_STATUS_CELLS // (1 + len(gateways))
    ids = await _claimed(ch, per_call, 0xA5)
    for g in gateways:
        await ch.operator.register_gateway(g, x25519_public_key=os.urandom(32), account=ch.gateway.address)
        await ch.owner.authorize_gateway_many(
            g,
            device_ids=ids,
            sealed_keys=[sealed_key() for _ in ids],
            key_commitments=[commitment(d) for d in ids],
        )
    fn = ch.ledger.registry.functions.grantStatus(ids, gateways)
    used = await asyncio.to_thread(fn.estimate_gas, {"from": ch.owner.address})
    print(f"grantStatus({len(ids)} devices x {len(gateways)} gateways): {used} gas")
    assert used < CALL_GAS * 0.8, used
    assert all(all(s.current.values()) for s in await ch.ledger.grant_status(ids, gateways))


def test_reseal_seals_from_the_rekeyed_secret_when_the_bundle_has_one() -> None:
    """After a re-key at transfer the owner's bundle carries S' (diams-ledger rekey writes it): re-sealing
    after a firmware update must derive the gateways' keys from S', or the re-keyed device is refused."""
    d = ProvisionedDevice.generate(model="sensor", serial="RK1", firmware_hash=FW2)
    bundle = {
        "device_id": d.device_id.hex(),
        "model": d.model,
        "serial": d.serial,
        "mac": d.mac.hex(),
        "firmware_hash": d.firmware_hash.hex(),
        "secret": d.secret.hex(),
        "salt": d.salt.hex(),
        "claim_code": d.claim_code.decode("latin-1"),
    }
    s_prime = os.urandom(32)
    before = device_from_owner_bundle(bundle)
    after = device_from_owner_bundle({**bundle, "rekeyed_secret": s_prime.hex()})
    assert after.device_id == before.device_id and after.current_secret == s_prime
    rekeyed = ProvisionedDevice(**{**before.__dict__, "rekeyed_secret": s_prime})
    assert after.gateway_keys(b"gw-1", 2).k_dg == rekeyed.gateway_keys(b"gw-1", 2).k_dg
    assert after.gateway_keys(b"gw-1", 2).k_dg != before.gateway_keys(b"gw-1", 2).k_dg
    with pytest.raises(
        ValueError, match=r"owner bundle is not a device owner bundle \(missing field 'salt'\)"
    ):
        device_from_owner_bundle({k: v for k, v in bundle.items() if k != "salt"})


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["eth-tester"], indirect=True)
async def test_reseal_skips_a_removed_gateway_and_reseals_the_others(channel: Actors) -> None:
    """A gateway is removed, then the device's epoch moves for another reason (here its owner withdraws
    another gateway): the removed gateway's grant is stale like the others', but the chain refuses to seal
    to it (UnknownGateway). `reseal` re-seals the live gateways, skips the removed one and names it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ledger_bridge.firmware import reseal
    from ledger_bridge.index import onchain_gateway_id

    ch = channel
    d = ProvisionedDevice.generate(model="sensor", serial="RM1", firmware_hash=FW2)
    await ch.manufacturer.register_many([d.registration()])
    await ch.owner.claim(d.device_id, d.claim_code)
    await ch.owner.activate(d.device_id)
    removed, kept, withdrawn = (onchain_gateway_id(n) for n in (b"gw-removed", b"gw-kept", b"gw-withdrawn"))
    for g in (removed, kept, withdrawn):
        pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
        await ch.operator.register_gateway(g, x25519_public_key=pub, account=ch.gateway.address)
        sealed = sealed_key()
        await ch.owner.authorize_gateway(d.device_id, g, sealed_key=sealed, key_commitment=commitment(sealed))
    await ch.operator.remove_gateway(removed)
    await ch.owner.deauthorize_gateway(d.device_id, withdrawn)  # epoch + 1: the other two grants are stale
    report = await reseal(ch.ledger, ch.owner, [d])
    assert (report.gateways, report.removed, report.resealed) == ((kept,), (removed,), 1)
    assert (await ch.ledger.grant(d.device_id, kept)).current
    assert report.summary().endswith("; removed gateways, skipped: gw-removed")
