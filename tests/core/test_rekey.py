"""Re-keying at transfer (device_agent/core/rekey.py): the new owner and the device end with a fresh
secret S' that a previous owner cannot compute, although it knows S, saw every message and is active on
the path. Each previous-owner attack is a test; both X25519 implementations are checked against
RFC 7748 and against each other."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from device_agent.agent.x25519 import x25519 as x25519_c
from device_agent.core import device, gateway, keys, rekey
from device_agent.core.x25519 import BASE, public_key
from device_agent.core.x25519 import x25519 as pure_x25519
from firmware_sim.pair import authenticated, handshake

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "x25519.json"
X = x25519_c  # CPython: `cryptography`
GW = b"gw-new-owner"
FW = bytes(32)


def test_x25519_rfc7748_vectors_on_both_implementations() -> None:
    v = json.loads(VECTORS.read_text())
    for fn in (pure_x25519, X):
        for case in v["scalar_mult"]:
            assert fn(bytes.fromhex(case["k"]), bytes.fromhex(case["u"])).hex() == case["out"]
        dh = v["diffie_hellman"]
        a, b = bytes.fromhex(dh["alice_private"]), bytes.fromhex(dh["bob_private"])
        assert fn(a, BASE).hex() == dh["alice_public"] and fn(b, BASE).hex() == dh["bob_public"]
        assert fn(a, bytes.fromhex(dh["bob_public"])).hex() == dh["shared"]
    for _ in range(5):
        k, u = os.urandom(32), public_key(os.urandom(32))
        assert pure_x25519(k, u) == X(k, u)


class Device:
    """A device as made at manufacture: S, its id, and its static X25519 key pair."""

    def __init__(self) -> None:
        self.secret = os.urandom(32)
        self.device_id = os.urandom(8)
        self.static = os.urandom(32)
        self.public = X(self.static, BASE)  # registered on the ledger by the manufacturer

    def role(self) -> rekey.DeviceRekey:
        return rekey.DeviceRekey(self.device_id, self.secret, self.static, X, os.urandom)


def _exchange(dev: Device, owner_secret: bytes, epoch: int = 1) -> tuple[bytes, bytes]:
    """A clean exchange -> (owner's S', device's S')."""
    owner = rekey.OwnerRekey(dev.device_id, epoch, owner_secret, dev.public, X, os.urandom)
    d = dev.role()
    confirm = owner.reply(d.init(owner.start()))
    s_dev = d.confirm(confirm)
    assert owner.new_secret is not None
    return owner.new_secret, s_dev


def test_a_clean_exchange_agrees_on_a_fresh_secret_and_sizes_are_fixed() -> None:
    dev = Device()
    owner = rekey.OwnerRekey(dev.device_id, 3, dev.secret, dev.public, X, os.urandom)
    d = dev.role()
    init = owner.start()
    reply = d.init(init)
    confirm = owner.reply(reply)
    assert (len(init), len(reply), len(confirm)) == (rekey.INIT_LEN, rekey.REPLY_LEN, rekey.CONFIRM_LEN)
    s2 = d.confirm(confirm)
    assert s2 == owner.new_secret and s2 != dev.secret and len(s2) == 32
    assert "S" not in repr(owner) and s2.hex() not in repr(owner) + repr(d)


def test_the_previous_owner_cannot_compute_s2_from_s_and_the_transcript() -> None:
    """S is no input of S': a passive previous owner with S and every message has nothing to derive it
    from (the same exchange replayed with another S yields the same S'), and every candidate it can
    build from what it knows misses."""
    dev = Device()
    seen: list[bytes] = []
    fixed = iter([os.urandom(32), os.urandom(16), os.urandom(32), os.urandom(16)] * 2)

    def recorded_random(n: int) -> bytes:
        value = next(fixed)
        assert len(value) == n
        return value

    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, recorded_random)
    d = rekey.DeviceRekey(dev.device_id, dev.secret, dev.static, X, recorded_random)
    seen.append(owner.start())
    seen.append(d.init(seen[0]))
    seen.append(owner.reply(seen[1]))
    s2 = d.confirm(seen[2])
    # what the previous owner can compute: anything keyed by S over the transcript
    candidates = {
        keys.hkdf(dev.secret, dev.device_id, b"".join(seen)),
        keys.hmac_sha256(dev.secret, b"".join(seen)),
    }
    candidates.add(rekey._derive(dev.secret, dev.secret, dev.device_id, b"".join(seen))[0])
    assert s2 not in candidates
    # S contributes nothing: the same ephemeral choices under another S give the same S'
    other = os.urandom(32)
    owner2 = rekey.OwnerRekey(dev.device_id, 1, other, dev.public, X, recorded_random)
    d2 = rekey.DeviceRekey(dev.device_id, other, dev.static, X, recorded_random)
    assert d2.confirm(owner2.reply(d2.init(owner2.start()))) == s2


def test_a_substituted_device_key_is_detected_by_the_new_owner() -> None:
    """Active previous owner in the middle: it answers INIT itself (it knows S) with its own ephemeral
    key; lacking the device's static private key it cannot make REPLY's tag, so the owner refuses."""
    dev = Device()
    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    init = owner.start()
    impostor = rekey.DeviceRekey(
        dev.device_id, dev.secret, os.urandom(32), X, os.urandom
    )  # its own static key
    with pytest.raises(rekey.RekeyError) as refused:
        owner.reply(impostor.init(init))
    assert refused.value.reason == "device_confirmation" and owner.new_secret is None
    # and relaying the real device's reply with its own ephemeral key swapped in fails the same way
    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    reply = bytearray(dev.role().init(owner.start()))
    reply[1:33] = X(os.urandom(32), BASE)
    with pytest.raises(rekey.RekeyError, match="device_confirmation"):
        owner.reply(bytes(reply))


def test_a_substituted_owner_key_never_makes_the_device_commit() -> None:
    """The previous owner swaps O in INIT for its own key (recomputing the INIT tag: it knows S). The
    device answers, but the new owner's check fails, and the previous owner cannot produce a CONFIRM
    the device accepts for the new owner's exchange, while a CONFIRM for its own exchange only gives it a
    secret the new owner's gateways never get (the new owner confirmed nothing, authorizes nothing)."""
    dev = Device()
    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    genuine = owner.start()
    attacker = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    forged = attacker.start()
    d = dev.role()
    reply = d.init(forged)
    with pytest.raises(rekey.RekeyError, match="device_confirmation"):
        owner.reply(reply)  # the new owner detects the substitution
    with pytest.raises(rekey.RekeyError, match="owner_confirmation"):
        d.confirm(b"\x23" + os.urandom(16))
    assert genuine != forged


def test_after_the_rekey_s_opens_nothing(tmp_path: Path) -> None:
    """After the re-key the previous owner can neither start another one (INIT needs S'), nor
    authenticate as the device to the new owner's gateway, nor produce or check data tags under it."""
    dev = Device()
    s2, s_dev = _exchange(dev, dev.secret)
    assert s2 == s_dev
    # INIT keyed by the old S is refused by the re-keyed device
    rekeyed = rekey.DeviceRekey(dev.device_id, s2, dev.static, X, os.urandom)
    stale = rekey.OwnerRekey(dev.device_id, 2, dev.secret, dev.public, X, os.urandom)
    with pytest.raises(rekey.RekeyError, match="bad_init"):
        rekeyed.init(stale.start())
    # the new owner's gateway holds K_dg from S'
    epoch = 2
    k_new = keys.gateway_key(s2, dev.device_id, GW, epoch, FW)
    entry = gateway.DeviceEntry(dev.device_id, k_new, epoch, lifetime=60)
    gw = gateway.GatewayRole(GW, {dev.device_id: entry}.get, os.urandom, proof_timeout=5.0)
    # the previous owner, with K_dg computed from S, is refused
    k_old = keys.gateway_key(dev.secret, dev.device_id, GW, epoch, FW)
    ev, gw_events = handshake(device.DeviceRole(dev.device_id, GW, k_old, epoch), gw, 1)
    assert not authenticated(ev)
    assert any(getattr(e, "reason", "") == "bad_otp" for e in gw_events), gw_events
    # the genuine device with S' authenticates; the previous owner's session keys differ from its own
    real = device.DeviceRole(dev.device_id, GW, k_new, epoch)
    ev, _ = handshake(real, gw, 2)
    assert authenticated(ev)
    assert keys.pair_keys(k_old) != keys.pair_keys(k_new)
    # and the broker password moves with S' too
    assert keys.broker_password(s2, dev.device_id, 1) != keys.broker_password(dev.secret, dev.device_id, 1)


def test_garbage_and_low_order_points_are_refused() -> None:
    dev = Device()
    d = dev.role()
    for bad in (b"", b"\x21" * 60, b"\x22" + bytes(60)):
        with pytest.raises(rekey.RekeyError, match="bad_message"):
            d.init(bad)
    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    init = bytearray(owner.start())
    init[5:37] = bytes(32)  # the zero point: every DH with it is zero
    body = bytes(init[:53])
    init[53:] = keys.hmac_sha256(rekey._init_key(dev.secret, dev.device_id, 1), body)[:8]
    with pytest.raises(rekey.RekeyError, match="bad_key"):
        d.init(bytes(init))
    with pytest.raises(rekey.RekeyError, match="not_started"):
        d.confirm(b"\x23" + bytes(16))


def test_the_pinned_exchange_byte_for_byte() -> None:
    v = json.loads((VECTORS.parent / "rekey_transcript.json").read_text())
    i = {k: (bytes.fromhex(x) if isinstance(x, str) else x) for k, x in v["inputs"].items()}
    for fn in (X, pure_x25519):
        owner_values = [i["owner_ephemeral_private"], i["owner_nonce"]]
        device_values = [i["device_ephemeral_private"], i["device_nonce"]]
        public = fn(i["device_static_private"], BASE)
        assert public.hex() == v["device_static_public"]
        owner = rekey.OwnerRekey(
            i["device_id"], i["epoch"], i["secret"], public, fn, lambda n: owner_values.pop(0)
        )
        d = rekey.DeviceRekey(
            i["device_id"], i["secret"], i["device_static_private"], fn, lambda n: device_values.pop(0)
        )
        assert owner.start().hex() == v["init"]
        assert d.init(bytes.fromhex(v["init"])).hex() == v["reply"]
        assert owner.reply(bytes.fromhex(v["reply"])).hex() == v["confirm"]
        assert d.confirm(bytes.fromhex(v["confirm"])).hex() == v["new_secret"] == owner.new_secret.hex()
        assert d.done().hex() == v["done"]
        owner.done(bytes.fromhex(v["done"]))  # verifies
        with pytest.raises(rekey.RekeyError, match="bad_done"):
            owner.done(bytes.fromhex(v["done_from_s"]))
        assert rekey.key_commitment(owner.new_secret).hex() == v["rekey_commitment"]


def test_done_proves_the_commit_and_a_previous_owner_cannot_forge_or_replay_it() -> None:
    """DONE (sent by the device only after it stored S') is keyed by S' under its own label and bound to
    the transcript: the previous owner (knows S, saw every message of this run and of an earlier one)
    cannot make one the owner accepts: not from S, not with K_conf's construction, not by replaying
    another run's DONE, not by echoing CONFIRM. Only the device's DONE verifies."""
    dev = Device()
    earlier = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    d0 = dev.role()
    d0.confirm(earlier.reply(d0.init(earlier.start())))
    replayed = d0.done()  # another run's DONE, captured on the path

    owner = rekey.OwnerRekey(dev.device_id, 1, dev.secret, dev.public, X, os.urandom)
    d = dev.role()
    init = owner.start()
    reply = d.init(init)
    with pytest.raises(rekey.RekeyError, match="not_started"):
        owner.done(replayed)  # no CONFIRM yet: nothing to prove
    with pytest.raises(rekey.RekeyError, match="not_started"):
        d.done()  # nothing committed: the device has no DONE to give
    confirm = owner.reply(reply)
    t = rekey._transcript(
        dev.device_id, 1, dev.public, init[5:37], reply[1:33], init[37:53], reply[33:49]
    )  # all public
    forged = [
        replayed,
        b"\x24" + rekey._done_tag(dev.secret, t),  # the same construction from S
        b"\x24" + keys.hmac_sha256(keys.hkdf(dev.secret, dev.device_id, b"diams/v1/rekey-done"),
                                   b"\x24" + t)[:16],
        b"\x24" + confirm[1:],  # CONFIRM's tag echoed
        b"\x24" + os.urandom(16),
    ]
    for bad in forged:
        with pytest.raises(rekey.RekeyError, match="bad_done"):
            owner.done(bad)
    for bad in (confirm, b"", b"\x24" + bytes(15)):
        with pytest.raises(rekey.RekeyError, match="bad_message"):
            owner.done(bad)
    s2 = d.confirm(confirm)
    done = d.done()
    assert len(done) == rekey.DONE_LEN and done[0] == rekey.DONE and done != replayed
    owner.done(done)  # the genuine DONE verifies
    assert owner.new_secret == s2
    assert s2.hex() not in repr(d) + repr(owner)
