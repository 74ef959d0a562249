# Runs under MicroPython: computes every vector's outputs from its inputs with the core and prints
# JSON lines. The pytest side compares that line with the same files (tests/micropython/).
# argv[1]: the vectors directory.
import gc
import json
import sys

from device_agent.core import crypto, device, identity, keys, otp

H = bytes.fromhex


def load(name):
    with open(sys.argv[1] + "/" + name) as f:
        return json.load(f)


def code(key, counter, digits, name):
    """The decimal HOTP code (RFC 4226 5.3) from the core's truncated value; TOTP is HOTP over a time step."""
    s = str(otp.hotp_value(key, counter, name) % 10 ** digits)
    return "0" * (digits - len(s)) + s


def rfc4226():
    v = load("rfc4226_hotp.json")
    return [code(v["secret_ascii"].encode(), c, v["digits"], "sha1") for c in range(len(v["codes"]))]


def rfc6238():
    v = load("rfc6238_totp_sha256.json")
    key = v["secret_ascii"].encode()
    return [code(key, t // v["step"], v["digits"], "sha256") for t, _ in v["rows"]]


def rfc4231():
    # crypto.hmac_digest is the pure-Python path here: MicroPython has no hmac module.
    cases = load("rfc4231_hmac_sha256.json")["cases"]
    return [crypto.hmac_digest(H(c["key"]), H(c["data"]), "sha256").hex() for c in cases]


def rfc5869():
    out = []
    for c in load("rfc5869_hkdf_sha256.json")["cases"]:
        prk = crypto.hkdf_extract(H(c["salt"]), H(c["ikm"]))
        out.append([prk.hex(), crypto.hkdf_expand(prk, H(c["info"]), c["length"]).hex()])
    return out


def transcript():
    v = load("handshake_transcript.json")
    i = v["inputs"]
    secret, fw, mac = H(i["secret"]), H(i["firmware_hash"]), H(i["mac"])
    gw = i["gateway_id"].encode()
    did = identity.derive_device_id(secret, i["model"], i["serial"], mac)
    kdg = keys.gateway_key(secret, did, gw, i["epoch"], fw)
    out = {
        "device_id": did.hex(),
        "characteristics_commitment": identity.characteristics_commitment(
            H(i["salt"]), i["model"], i["serial"], mac, fw).hex(),
        "claim_hash": identity.claim_hash(did, H(i["claim_code"])).hex(),
        "gateway_key": kdg.hex(),
        "key_commitment": identity.key_commitment(kdg).hex(),
    }
    dev = device.DeviceRole(did, gw, kdg, i["epoch"])
    out["hello"] = dev.hello(i["counter"], H(i["device_nonce"])).hex()
    proof, ev = dev.receive(H(v["challenge"]), 0)
    out["proof"] = proof.hex() if proof else None
    out["challenge_event"] = ev.reason
    reply, ev = dev.receive(H(v["result"]), 0)
    out["result_reply"] = reply
    out["result_event"] = type(ev).__name__
    out["state"] = dev.state
    s = ev.session
    payload, reason = s.open(b"config", H(v["command_config"]), 0)
    out["command_config"] = [payload.decode() if payload else None, reason]
    out["command_config_again"] = list(s.open(b"config", H(v["command_config"]), 0))
    out["data_telemetry"] = s.seal(b"telemetry", b'{"t":21.5}').hex()
    return out


def emit(name, value):
    # One JSON line per check keeps the peak small: a 64 KB heap also holds the compiled core.
    print(json.dumps({name: value}))
    gc.collect()


emit("runtime", [sys.implementation.name, device.__file__])
for name, check in (("rfc4226", rfc4226), ("rfc6238", rfc6238), ("rfc4231", rfc4231),
                    ("rfc5869", rfc5869), ("transcript", transcript)):
    emit(name, check())
