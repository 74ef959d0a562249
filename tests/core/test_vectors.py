"""RFC vectors and the pinned handshake transcript, on CPython (both HMAC paths)."""

import base64
import hashlib
import os
import random

import pyotp
import pytest

from device_agent.core import crypto, device, gateway, identity, keys, otp
from tests.core.vectors import hotp, load, totp

H = bytes.fromhex


@pytest.mark.parametrize("hmac_fn", [crypto.hmac_digest, crypto._pure_hmac], ids=["stdlib", "pure"])
def test_rfc4231_hmac_sha256(hmac_fn):
    for case in load("rfc4231_hmac_sha256.json")["cases"]:
        mac = hmac_fn(H(case["key"]), H(case["data"]), "sha256").hex()
        assert mac.startswith(case["mac"]), case["case"]
        assert len(case["mac"]) in (32, 64)


def test_rfc5869_hkdf_sha256():
    for case in load("rfc5869_hkdf_sha256.json")["cases"]:
        prk = crypto.hkdf_extract(H(case["salt"]), H(case["ikm"]))
        assert prk.hex() == case["prk"]
        assert crypto.hkdf_expand(prk, H(case["info"]), case["length"]).hex() == case["okm"]


def test_rfc4226_hotp_sha1():
    v = load("rfc4226_hotp.json")
    codes = [hotp(v["secret_ascii"].encode(), c, v["digits"], "sha1") for c in range(10)]
    assert codes == v["codes"]


def test_rfc6238_totp_sha256():
    v = load("rfc6238_totp_sha256.json")
    for t, code in v["rows"]:
        assert totp(v["secret_ascii"].encode(), t, v["step"], 0, v["digits"], "sha256") == code


def test_hotp_agrees_with_pyotp_for_random_secrets_and_counters():
    rng = random.Random(4226)
    for _ in range(500):
        secret = rng.randbytes(rng.choice([20, 32, 64]))
        counter = rng.randrange(0, 2**40)
        digits = rng.choice([6, 7, 8])
        for name, digest in (("sha1", hashlib.sha1), ("sha256", hashlib.sha256)):
            ref = pyotp.HOTP(base64.b32encode(secret).decode(), digits=digits, digest=digest)
            assert hotp(secret, counter, digits, name) == ref.at(counter)


def test_weak_otp_settings_are_refused_early():
    with pytest.raises(ValueError):
        hotp(b"k" * 20, 1, digits=4)
    with pytest.raises(ValueError):
        otp.hotp_value(b"k" * 20, -1)
    with pytest.raises(ValueError):
        totp(b"k" * 20, 0, step=0)


def test_constant_time_compare_paths_agree():
    for a, b in [(b"", b""), (b"abc", b"abc"), (b"abc", b"abd"), (b"abc", b"ab"), (bytes(8), bytes(8))]:
        assert crypto._pure_equal(a, b) == crypto.ct_equal(a, b) == (a == b)


def test_transcript_vector_reproduces_byte_for_byte():
    v = load("handshake_transcript.json")
    i = v["inputs"]
    secret, fw, gw_id = H(i["secret"]), H(i["firmware_hash"]), i["gateway_id"].encode()
    did = identity.derive_device_id(secret, i["model"], i["serial"], H(i["mac"]))
    assert did.hex() == v["device_id"]
    commitment = identity.characteristics_commitment(H(i["salt"]), i["model"], i["serial"], H(i["mac"]), fw)
    assert commitment.hex() == v["characteristics_commitment"]
    assert identity.claim_hash(did, H(i["claim_code"])).hex() == v["claim_hash"]
    kdg = keys.gateway_key(secret, did, gw_id, i["epoch"], fw)
    assert kdg.hex() == v["gateway_key"]
    assert identity.key_commitment(kdg).hex() == v["key_commitment"]

    dev = device.DeviceRole(did, gw_id, kdg, i["epoch"])
    assert dev.hello(i["counter"], H(i["device_nonce"])).hex() == v["hello"]
    entry = gateway.DeviceEntry(did, kdg, i["epoch"], counter=i["counter"] - 1, lifetime=i["lifetime"])
    gw = gateway.GatewayRole(gw_id, {did: entry}.get, lambda n: H(i["gateway_nonce"]))
    challenge, _ = gw.receive(did, H(v["hello"]), 0.0)
    assert challenge.hex() == v["challenge"]
    proof, _ = dev.receive(challenge, 0.0)
    assert proof.hex() == v["proof"]
    result, events = gw.receive(did, proof, 0.0)
    assert result.hex() == v["result"]
    _, done = dev.receive(result, 0.0)
    assert done.session.open(b"config", H(v["command_config"]), 1.0) == (b"interval=60", None)
    assert events[0].session.open(b"telemetry", H(v["data_telemetry"]), 1.0) == (b'{"t":21.5}', None)


def test_derivations_separate_gateways_epochs_and_firmware():
    secret, fw = os.urandom(32), os.urandom(32)
    did = identity.derive_device_id(secret, "m", "s", bytes(6))
    base = keys.gateway_key(secret, did, b"gw-a", 1, fw)
    others = {
        keys.gateway_key(secret, did, b"gw-b", 1, fw),
        keys.gateway_key(secret, did, b"gw-a", 2, fw),
        keys.gateway_key(secret, did, b"gw-a", 1, os.urandom(32)),
        keys.gateway_key(os.urandom(32), did, b"gw-a", 1, fw),
    }
    assert base not in others and len(others) == 4
    # The device id depends on the secret too: equal characteristics, different devices.
    assert identity.derive_device_id(os.urandom(32), "m", "s", bytes(6)) != did
