"""Writes tests/vectors/spec_v1_1.json: one vector per point that PROTOCOL.md v1.1 pins down.

    .venv/bin/python scripts/make_spec_vectors.py

Inputs come from tests/vectors/handshake_transcript.json where one applies. Checked on CPython by
tests/core/test_spec_vectors.py and, for what the device core computes, under MicroPython by
tests/micropython/test_mpy_spec_vectors.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from device_agent.core import crypto, gateway, identity, keys, otp, topics, wire
from gateway.mqtt import codec

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"


def main() -> None:
    t = json.loads((VECTORS / "handshake_transcript.json").read_text())
    i = t["inputs"]
    H = bytes.fromhex
    s, fw, did = H(i["secret"]), H(i["firmware_hash"]), H(t["device_id"])
    gw = i["gateway_id"].encode("ascii")
    k_dg = keys.gateway_key(s, did, gw, i["epoch"], fw)
    k_otp, _ = keys.pair_keys(k_dg)
    c, nd = i["counter"], H(i["device_nonce"])
    hotp_input = c.to_bytes(8, "big") + nd
    mac = crypto.hmac_sha256(k_otp, hotp_input)
    offset = mac[31] & 0x0F
    wrong = mac[19] & 0x0F
    value = otp.hotp_value(k_otp, c, "sha256", nd)
    assert value == int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF

    # first counter: a fresh floor (no counter accepted yet) takes c = 0
    hello0 = wire.encode(
        wire.HELLO, i["epoch"], 0, nd, otp.hotp_value(k_otp, 0, "sha256", nd).to_bytes(4, "big")
    )
    entry = gateway.DeviceEntry(did, k_dg, i["epoch"])
    role = gateway.GatewayRole(gw, {did: entry}.get, lambda n: bytes(n), proof_timeout=5.0)
    reply, _ = role.receive(did, hello0, 0.0)
    assert reply is not None and reply[0] == 0x12

    stream = "telemetry"
    data = H(t["data_telemetry"])
    body = data[:-8]
    tag_input = keys.lp(stream) + body
    p_label = "diams/v1/broker-password-epoch"
    p_raw = crypto.hmac_sha256(s, p_label.encode() + did + i["epoch"].to_bytes(4, "big"))[:16]
    p_next = crypto.hmac_sha256(s, p_label.encode() + did + (i["epoch"] + 1).to_bytes(4, "big"))[:16]
    text_code = "3f9a0c5e1b7d2a648e0f5c3b9a1d7e26"  # as provision() makes them: 32 hex characters
    g, d = i["gateway_id"], t["device_id"]
    names = {
        "handshake_up": topics.handshake_up(g, d),
        "handshake_down": topics.handshake_down(g, d),
        "data": topics.data(g, d, stream),
        "command": topics.command(g, d, "config"),
        "command_subscription": topics.topic_filter(topics.COMMAND, g, d),
        "verified": topics.verified(g, d, stream),
    }
    publish = codec.publish(names["handshake_up"].encode(), H(t["hello"]), qos=1, packet_id=1, retain=False)
    out = {
        "about": "docs/PROTOCOL.md v1.1: one vector per point the spec pins down; inputs from "
        "handshake_transcript.json; hex unless said",
        "otp_truncation": {
            "k_otp": k_otp.hex(),
            "hotp_input": hotp_input.hex(),
            "hmac": mac.hex(),
            "offset_from_byte_31": offset,
            "offset_from_byte_19_wrong": wrong,
            "otp": value,
            "otp_bytes": value.to_bytes(4, "big").hex(),
        },
        "first_counter": {
            "counter": 0,
            "hello": hello0.hex(),
            "accepted_on_fresh_floor": True,
            "window": 100,
            "largest_first_counter": 99,
        },
        "encodings": {
            "gateway_id_ascii": gw.hex(),
            "k_dg_info": (b"diams/v1/gateway-key" + keys.lp(gw) + i["epoch"].to_bytes(4, "big") + fw).hex(),
            "firmware_hash_raw_32": fw.hex(),
            "firmware_hash_text_form": "0x" + fw.hex(),
            "stream": stream,
            "stream_lp": keys.lp(stream).hex(),
        },
        "data_tag": {
            "message": data.hex(),
            "header_byte": "15",
            "tag_input": tag_input.hex(),
            "tag": data[-8:].hex(),
        },
        "broker_password": {
            "label": p_label,
            "epoch": i["epoch"],
            "p_raw_16": p_raw.hex(),
            "mqtt_password_ascii": p_raw.hex(),
            "sealed_plaintext": (k_dg + p_raw).hex(),
            "next_epoch": i["epoch"] + 1,
            "next_epoch_mqtt_password_ascii": p_next.hex(),
        },
        "claim_code": {
            "bytes_form": i["claim_code"],
            "bytes_form_claim_hash": t["claim_hash"],
            "text_form": text_code,
            "text_form_bytes": text_code.encode("ascii").hex(),
            "text_form_claim_hash": identity.claim_hash(did, text_code.encode("ascii")).hex(),
        },
        "mqtt": {"hello_publish_qos1_no_retain": publish.hex(), "first_byte": "32"},
        "topics": names,
        "reject": {
            "bad_otp_no_hint": wire.encode(wire.REJECT, 5, 0).hex(),
            "stale_epoch_hint_3": wire.encode(wire.REJECT, 4, 3).hex(),
        },
    }
    (VECTORS / "spec_v1_1.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
