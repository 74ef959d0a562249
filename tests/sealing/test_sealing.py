"""Sealed per-gateway keys: only the addressed gateway opens them, for that device and epoch only."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device_agent.core import identity, keys
from ledger_bridge.sealing import (
    SEALED_LEN,
    GatewayKeys,
    SealError,
    generate_gateway_key,
    load_gateway_key,
    public_bytes,
    seal,
    unseal,
)


@pytest.fixture
def setup():
    secret, fw = os.urandom(32), os.urandom(32)
    did = identity.derive_device_id(secret, "m", "s", os.urandom(6))
    gw_a, gw_b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    k_a = GatewayKeys(k_dg=keys.gateway_key(secret, did, b"gw-a", 2, fw), broker_password=os.urandom(16))
    return did, gw_a, gw_b, k_a


def test_round_trip_and_commitment(setup):
    did, gw_a, _, k_a = setup
    box = seal(k_a, public_bytes(gw_a.public_key()), did, b"gw-a", 2)
    assert len(box) == SEALED_LEN and k_a.k_dg not in box and k_a.broker_password not in box
    assert unseal(box, gw_a, did, b"gw-a", 2, identity.key_commitment(k_a.k_dg)) == k_a
    assert k_a.k_dg.hex() not in repr(k_a) and k_a.broker_password.hex() not in repr(k_a)
    assert seal(k_a, public_bytes(gw_a.public_key()), did, b"gw-a", 2) != box  # fresh ephemeral each time


@pytest.mark.parametrize("change", ["other_gateway_key", "other_device", "other_gateway_id", "other_epoch",
                                    "flipped_byte", "truncated", "wrong_commitment"])
def test_box_opens_for_nothing_else(setup, change):
    did, gw_a, gw_b, k_a = setup
    box = seal(k_a, public_bytes(gw_a.public_key()), did, b"gw-a", 2)
    args = {"sealed": box, "gateway_private": gw_a, "device_id": did, "gateway_id": b"gw-a", "epoch": 2,
            "commitment": identity.key_commitment(k_a.k_dg)}
    if change == "other_gateway_key":
        args["gateway_private"] = gw_b
    elif change == "other_device":
        args["device_id"] = os.urandom(8)
    elif change == "other_gateway_id":
        args["gateway_id"] = b"gw-b"
    elif change == "other_epoch":
        args["epoch"] = 3
    elif change == "flipped_byte":
        args["sealed"] = box[:40] + bytes([box[40] ^ 1]) + box[41:]
    elif change == "truncated":
        args["sealed"] = box[:-1]
    else:
        args["commitment"] = identity.key_commitment(os.urandom(32))
    with pytest.raises(SealError) as err:
        unseal(**args)
    assert k_a.k_dg.hex() not in str(err.value)


def test_gateway_key_file_is_0600_and_refused_otherwise(tmp_path):
    path = tmp_path / "gateway.key"
    pub = generate_gateway_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_bytes(load_gateway_key(path).public_key()) == pub
    path.chmod(0o644)
    with pytest.raises(SealError, match="chmod 600"):
        load_gateway_key(path)
