"""The sealed-key format pinned by a vector (tests/vectors/sealing.json), recomputed here step by step
from docs/PROTOCOL.md 3.4 with the primitives alone, and opened by ``unseal``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger_bridge.sealing import (
    GatewayKeys,
    SealError,
    _seal_rekey_with,
    _seal_with,
    unseal,
    unseal_rekey_password,
)

CASES = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "sealing.json").read_text())["cases"]


def _from_the_spec(case: dict) -> bytes:
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["ephemeral_private"]))
    eph_pub = eph.public_key().public_bytes_raw()
    gw_pub = bytes.fromhex(case["gateway_public"])
    gid = case["gateway_id"].encode()
    context = bytes.fromhex(case["device_id"]) + bytes([len(gid)]) + gid + case["epoch"].to_bytes(4, "big")
    shared = eph.exchange(X25519PublicKey.from_public_bytes(gw_pub))
    key = HKDF(hashes.SHA256(), 32, salt=eph_pub + gw_pub, info=b"diams/v1/seal" + context).derive(shared)
    plain = bytes.fromhex(case["k_dg"]) + bytes.fromhex(case["broker_password"])
    return eph_pub + ChaCha20Poly1305(key).encrypt(bytes(12), plain, context)


@pytest.mark.parametrize("case", CASES)
def test_the_vector_is_what_the_spec_says_and_what_seal_writes(case):
    sealed = bytes.fromhex(case["sealed"])
    assert len(sealed) == 96
    assert _from_the_spec(case) == sealed
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["ephemeral_private"]))
    keys = GatewayKeys(
        k_dg=bytes.fromhex(case["k_dg"]), broker_password=bytes.fromhex(case["broker_password"])
    )
    did, gid = bytes.fromhex(case["device_id"]), case["gateway_id"].encode()
    assert _seal_with(eph, keys, bytes.fromhex(case["gateway_public"]), did, gid, case["epoch"]) == sealed


@pytest.mark.parametrize("case", CASES)
def test_the_vector_opens_with_the_gateway_key_and_only_in_its_context(case):
    gw = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["gateway_private"]))
    sealed = bytes.fromhex(case["sealed"])
    did, gid = bytes.fromhex(case["device_id"]), case["gateway_id"].encode()
    keys = unseal(sealed, gw, did, gid, case["epoch"])
    assert keys.k_dg.hex() == case["k_dg"] and keys.broker_password.hex() == case["broker_password"]
    epoch = case["epoch"]
    for other in ((did, gid, epoch + 1), (did, b"gw-b", epoch), (bytes(8), gid, epoch)):
        with pytest.raises(SealError):
            unseal(sealed, gw, *other)


REKEY_CASES = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "sealing.json").read_text()
)["rekey_cases"]


@pytest.mark.parametrize("case", REKEY_CASES)
def test_the_rekey_vector_is_what_the_spec_says_and_opens_only_in_its_context(case):
    """The re-key window's box (docs/PROTOCOL.md 3.5): P alone, under the label "diams/v1/seal-rekey"."""
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["ephemeral_private"]))
    eph_pub = eph.public_key().public_bytes_raw()
    gw_pub = bytes.fromhex(case["gateway_public"])
    did, gid, epoch = bytes.fromhex(case["device_id"]), case["gateway_id"].encode(), case["epoch"]
    context = did + bytes([len(gid)]) + gid + epoch.to_bytes(4, "big")
    shared = eph.exchange(X25519PublicKey.from_public_bytes(gw_pub))
    info = b"diams/v1/seal-rekey" + context
    key = HKDF(hashes.SHA256(), 32, salt=eph_pub + gw_pub, info=info).derive(shared)
    password = bytes.fromhex(case["broker_password"])
    sealed = bytes.fromhex(case["sealed"])
    assert len(sealed) == 64
    assert eph_pub + ChaCha20Poly1305(key).encrypt(bytes(12), password, context) == sealed
    assert _seal_rekey_with(eph, password, gw_pub, did, gid, epoch) == sealed
    gw = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["gateway_private"]))
    assert unseal_rekey_password(sealed, gw, did, gid, epoch) == password
    for other in ((did, gid, epoch + 1), (did, b"gw-b", epoch), (bytes(8), gid, epoch)):
        with pytest.raises(SealError):
            unseal_rekey_password(sealed, gw, *other)
