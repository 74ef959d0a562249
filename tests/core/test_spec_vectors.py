"""docs/PROTOCOL.md v1.1: each point a second implementer had to guess is pinned by a vector in
tests/vectors/spec_v1_1.json, recomputed here with the code (and, for the device core, under
MicroPython in tests/micropython/test_mpy_spec_vectors.py)."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device_agent.core import crypto, gateway, identity, keys, otp, wire
from gateway.mqtt import codec
from ledger_bridge import sealing
from tests.core.vectors import load

H = bytes.fromhex
V = load("spec_v1_1.json")
T = load("handshake_transcript.json")
IN = T["inputs"]
DID, GW, S, FW = H(T["device_id"]), IN["gateway_id"].encode("ascii"), H(IN["secret"]), H(IN["firmware_hash"])
K_DG = keys.gateway_key(S, DID, GW, IN["epoch"], FW)


def test_hotp_input_is_u64_counter_then_nonce_and_truncation_reads_the_last_byte() -> None:
    v = V["otp_truncation"]
    k_otp, _ = keys.pair_keys(K_DG)
    assert k_otp.hex() == v["k_otp"]
    assert H(v["hotp_input"]) == IN["counter"].to_bytes(8, "big") + H(IN["device_nonce"])
    mac = crypto.hmac_sha256(k_otp, H(v["hotp_input"]))
    assert mac.hex() == v["hmac"]
    assert mac[31] & 0x0F == v["offset_from_byte_31"] != v["offset_from_byte_19_wrong"] == mac[19] & 0x0F
    assert otp.hotp_value(k_otp, IN["counter"], "sha256", H(IN["device_nonce"])) == v["otp"]
    assert H(T["hello"])[-4:].hex() == v["otp_bytes"]  # sent as 4 bytes, big-endian, top bit clear
    wrong = int.from_bytes(mac[v["offset_from_byte_19_wrong"] :][:4], "big") & 0x7FFFFFFF
    assert wrong != v["otp"]


def _fresh_gateway(epoch: int = IN["epoch"]) -> gateway.GatewayRole:
    entry = gateway.DeviceEntry(DID, K_DG, epoch)
    return gateway.GatewayRole(GW, {DID: entry}.get, os.urandom, proof_timeout=5.0)


def _hello(counter: int) -> bytes:
    k_otp, _ = keys.pair_keys(K_DG)
    nd = H(IN["device_nonce"])
    return wire.encode(
        wire.HELLO, IN["epoch"], counter, nd, otp.hotp_value(k_otp, counter, "sha256", nd).to_bytes(4, "big")
    )


def test_the_first_counter_is_zero_and_a_fresh_floor_takes_any_counter() -> None:
    v = V["first_counter"]
    assert _hello(0).hex() == v["hello"]
    reply, _ = _fresh_gateway().receive(DID, H(v["hello"]), 0.0)
    assert reply is not None and reply[0] == 0x12  # CHALLENGE
    reply, _ = _fresh_gateway().receive(DID, _hello(v["largest_first_counter"]), 0.0)
    assert reply is not None and reply[0] == 0x12
    # no look-ahead cliff (section 4): a counter past the window is accepted too, and only reported
    reply, _ = _fresh_gateway().receive(DID, _hello(v["window"]), 0.0)
    assert reply is not None and reply[0] == 0x12


def test_labels_gateway_ids_and_streams_are_ascii_with_one_length_byte_and_fw_is_raw() -> None:
    v = V["encodings"]
    assert H(v["gateway_id_ascii"]) == GW
    info = H(v["k_dg_info"])
    assert info == b"diams/v1/gateway-key" + bytes((len(GW),)) + GW + IN["epoch"].to_bytes(4, "big") + FW
    assert crypto.hkdf(S, DID, info, 32) == K_DG
    assert v["firmware_hash_raw_32"] == FW.hex() and v["firmware_hash_text_form"] == "0x" + FW.hex()
    assert H(v["stream_lp"]) == bytes((len(v["stream"]),)) + v["stream"].encode("ascii")


def test_the_data_tag_covers_lp_stream_header_byte_seq_and_payload() -> None:
    v = V["data_tag"]
    msg = H(v["message"])
    assert msg[0] == int(v["header_byte"], 16)
    assert H(v["tag_input"]) == H(V["encodings"]["stream_lp"]) + msg[:-8]
    _, k_mac = keys.pair_keys(K_DG)
    t = keys.transcript(DID, GW, IN["epoch"], IN["counter"], H(IN["device_nonce"]), H(IN["gateway_nonce"]))
    k_up, _ = keys.session_keys(k_mac, t)
    assert crypto.hmac_sha256(k_up, H(v["tag_input"]))[:8].hex() == v["tag"] == msg[-8:].hex()


def test_p_rotates_with_the_epoch() -> None:
    v = V["broker_password"]
    assert v["next_epoch"] == v["epoch"] + 1
    assert keys.broker_password(S, DID, v["next_epoch"]) == v["next_epoch_mqtt_password_ascii"]
    assert v["next_epoch_mqtt_password_ascii"] != v["mqtt_password_ascii"]


def test_p_is_16_raw_bytes_in_the_sealed_box_and_32_hex_characters_as_the_mqtt_password() -> None:
    v = V["broker_password"]
    assert v["epoch"] == IN["epoch"]
    assert keys.broker_password(S, DID, v["epoch"]) == v["mqtt_password_ascii"] == H(v["p_raw_16"]).hex()
    assert H(v["p_raw_16"]) == crypto.hmac_sha256(
        S, v["label"].encode() + DID + v["epoch"].to_bytes(4, "big"))[:16]
    assert len(H(v["p_raw_16"])) == 16
    assert H(v["sealed_plaintext"]) == K_DG + H(v["p_raw_16"])
    private = X25519PrivateKey.generate()
    box = sealing.seal(
        sealing.GatewayKeys(k_dg=K_DG, broker_password=H(v["p_raw_16"])),
        sealing.public_bytes(private.public_key()),
        DID,
        GW,
        IN["epoch"],
    )
    opened = sealing.unseal(box, private, DID, GW, IN["epoch"])
    assert opened.k_dg + opened.broker_password == H(v["sealed_plaintext"])


def test_the_claim_code_is_bytes_and_a_text_code_means_its_ascii_bytes() -> None:
    v = V["claim_code"]
    assert identity.claim_hash(DID, H(v["bytes_form"])).hex() == v["bytes_form_claim_hash"]
    assert H(v["text_form_bytes"]) == v["text_form"].encode("ascii")
    assert identity.claim_hash(DID, v["text_form"].encode("ascii")).hex() == v["text_form_claim_hash"]


def test_handshake_messages_travel_at_qos_1_without_retain() -> None:
    v = V["mqtt"]
    packet = codec.publish(
        V["topics"]["handshake_up"].encode(), H(T["hello"]), qos=1, packet_id=1, retain=False
    )
    assert packet.hex() == v["hello_publish_qos1_no_retain"]
    first = packet[0]
    assert first == int(v["first_byte"], 16) and first >> 4 == 3 and (first >> 1) & 3 == 1 and not first & 1


def test_topics_carry_the_gateway_id_for_data_and_commands() -> None:
    from device_agent.core import topics

    v, d, g = V["topics"], T["device_id"], IN["gateway_id"]
    assert topics.handshake_up(g, d) == v["handshake_up"]
    assert topics.handshake_down(g, d) == v["handshake_down"]
    assert topics.data(g, d, "telemetry") == v["data"]
    assert topics.command(g, d, "config") == v["command"]
    assert topics.topic_filter(topics.COMMAND, g, d) == v["command_subscription"]
    assert topics.verified(g, d, "telemetry") == v["verified"]


def test_reject_carries_epoch_hint_0_unless_stale_epoch() -> None:
    v = V["reject"]
    bad = bytearray(_hello(1))
    bad[-1] ^= 1
    reply, _ = _fresh_gateway().receive(DID, bytes(bad), 0.0)
    assert reply is not None and reply.hex() == v["bad_otp_no_hint"]
    reply, _ = _fresh_gateway(epoch=3).receive(DID, wire.encode(wire.HELLO, 2, 1, bytes(8), bytes(4)), 0.0)
    assert reply is not None and reply.hex() == v["stale_epoch_hint_3"]
