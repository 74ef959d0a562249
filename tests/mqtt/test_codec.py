"""The MQTT codec: round trips, any split of the stream, malformed input refused with one error type."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt import codec


@given(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=60),
    st.sampled_from([0, 1]),
    st.integers(1, 65535),
    st.integers(1, 50),
)
@settings(max_examples=300, deadline=None)
def test_publish_round_trips_through_any_split(payload, topic, qos, pid, chunk):
    data = codec.publish(topic, payload, qos=qos, packet_id=pid) * 3
    reader = codec.PacketReader()
    packets = []
    for i in range(0, len(data), chunk):
        packets += reader.feed(data[i : i + chunk])
    assert len(packets) == 3
    for p in packets:
        assert codec.parse_publish(p) == (topic, payload, qos, pid if qos else 0)


def test_large_remaining_length_and_limit():
    big = codec.publish(b"t", b"x" * 200_000)
    assert len(codec.PacketReader().feed(big)[0].body) == 200_003
    with pytest.raises(codec.MqttProtocolError, match="exceeds"):
        codec.PacketReader(max_packet=1000).feed(big)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_protocol_errors(data):
    reader = codec.PacketReader(max_packet=4096)
    try:
        for p in reader.feed(data):
            if p.type == codec.PUBLISH:
                codec.parse_publish(p)
            elif p.type in (codec.PUBACK, codec.SUBACK):
                codec.packet_id_of(p)
    except codec.MqttProtocolError:
        pass


def test_five_byte_length_is_refused():
    with pytest.raises(codec.MqttProtocolError):
        codec.PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_connect_and_subscribe_layouts():
    c = codec.connect(b"dev", username=b"u", password=b"p", keepalive=30)
    assert c[0] == 0x10 and c[2:8] == b"\x00\x04MQTT" and c[8] == 4 and c[9] == 0xC2
    s = codec.subscribe(7, [(b"a/+", 1)])
    assert s == b"\x82\x08\x00\x07\x00\x03a/+\x01"
    assert codec.puback(258) == b"\x40\x02\x01\x02"
    rng = random.Random(1)
    assert codec._varint(0) == b"\x00" and codec._varint(127) == b"\x7f" and codec._varint(128) == b"\x80\x01"
    for _ in range(100):
        n = rng.randrange(0, codec.MAX_PACKET)
        raw = codec._varint(n)
        assert len(raw) <= 4
