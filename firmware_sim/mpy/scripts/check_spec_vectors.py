# Runs under MicroPython: the device-core parts of tests/vectors/spec_v1_1.json (PROTOCOL.md v1.1)
# computed from their inputs; prints one JSON line that the pytest side compares with the file.
# argv[1]: the vectors directory.
import json
import sys

from device_agent.core import crypto, keys, otp, wire

H = bytes.fromhex


def load(name):
    with open(sys.argv[1] + "/" + name) as f:
        return json.load(f)


t = load("handshake_transcript.json")
v = load("spec_v1_1.json")
i = t["inputs"]
s, fw, did, gw = H(i["secret"]), H(i["firmware_hash"]), H(t["device_id"]), i["gateway_id"].encode()
k_dg = keys.gateway_key(s, did, gw, i["epoch"], fw)
k_otp, k_mac = keys.pair_keys(k_dg)
nd = H(i["device_nonce"])
tr = keys.transcript(did, gw, i["epoch"], i["counter"], nd, H(i["gateway_nonce"]))
k_up, _ = keys.session_keys(k_mac, tr)
out = {
    "hmac": crypto.hmac_sha256(k_otp, i["counter"].to_bytes(8, "big") + nd).hex(),
    "otp": otp.hotp_value(k_otp, i["counter"], "sha256", nd),
    "hello0": wire.encode(wire.HELLO, i["epoch"], 0, nd,
                          otp.hotp_value(k_otp, 0, "sha256", nd).to_bytes(4, "big")).hex(),
    "stream_lp": keys.lp("telemetry").hex(),
    "tag": crypto.hmac_sha256(k_up, H(v["data_tag"]["tag_input"]))[:8].hex(),
    "password": keys.broker_password(s, did, i["epoch"]),
    "password_next": keys.broker_password(s, did, i["epoch"] + 1),
    "reject": [wire.encode(wire.REJECT, 5, 0).hex(), wire.encode(wire.REJECT, 4, 3).hex()],
}
print(json.dumps(out))
