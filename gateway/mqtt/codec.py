"""MQTT 3.1.1 packets, sans-IO: bytes in, packets out; packets in, bytes out.

Strategy: only what DIAMS uses (CONNECT/CONNACK, PUBLISH with QoS 0 and 1, PUBACK, SUBSCRIBE/SUBACK,
UNSUBSCRIBE/UNSUBACK, PINGREQ/PINGRESP, DISCONNECT), so that one connection costs a few hundred bytes
of Python objects. ``PacketReader.feed`` accepts any split of the stream and raises ``MqttProtocolError``
(and nothing else) on a malformed or oversize packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PINGREQ_BYTES = b"\xc0\x00"
DISCONNECT_BYTES = b"\xe0\x00"
MAX_PACKET = 268_435_455

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttProtocolError(Exception):
    """The peer sent bytes that are not MQTT 3.1.1, or a packet larger than allowed."""


@dataclass(frozen=True, slots=True)
class Packet:
    type: int
    flags: int
    body: bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    if len(s) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack(">H", len(s)) + s


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def connect(
    client_id: bytes,
    *,
    username: bytes | None = None,
    password: bytes | None = None,
    keepalive: int = 60,
    clean: bool = True,
) -> bytes:
    flags = (
        (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    )
    body = _str(b"MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive) + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(CONNECT << 4, body)


def publish(
    topic: bytes, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False, dup: bool = False
) -> bytes:
    first = (PUBLISH << 4) | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    head = _str(topic) + (struct.pack(">H", packet_id) if qos else b"")
    return bytes((first,)) + _varint(len(head) + len(payload)) + head + payload


def puback(packet_id: int) -> bytes:
    return struct.pack(">BBH", PUBACK << 4, 2, packet_id)


def subscribe(packet_id: int, filters: list[tuple[bytes, int]]) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(_str(t) + bytes((q,)) for t, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def unsubscribe(packet_id: int, filters: list[bytes]) -> bytes:
    return _packet(
        (UNSUBSCRIBE << 4) | 0x02, struct.pack(">H", packet_id) + b"".join(_str(t) for t in filters)
    )


def parse_publish(p: Packet) -> tuple[bytes, bytes, int, int]:
    """-> (topic, payload, qos, packet_id)"""
    body = p.body
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH too short")
    n = struct.unpack_from(">H", body)[0]
    qos = (p.flags >> 1) & 3
    if qos == 3 or len(body) < 2 + n + (2 if qos else 0):
        raise MqttProtocolError("malformed PUBLISH")
    topic = body[2 : 2 + n]
    if qos:
        return topic, body[4 + n :], qos, struct.unpack_from(">H", body, 2 + n)[0]
    return topic, body[2 + n :], 0, 0


def packet_id_of(p: Packet) -> int:
    if len(p.body) < 2:
        raise MqttProtocolError("packet without packet identifier")
    return int(struct.unpack_from(">H", p.body)[0])


class PacketReader:
    """Reassembles packets from a byte stream."""

    __slots__ = ("_buf", "max_packet")

    def __init__(self, max_packet: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            first = buf[pos]
            length = 0
            mult = 1
            i = pos + 1
            while True:
                if i >= n:
                    del buf[:pos]
                    return out
                byte = buf[i]
                length += (byte & 0x7F) * mult
                i += 1
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise MqttProtocolError("remaining length longer than 4 bytes")
            if length > self.max_packet:
                raise MqttProtocolError(f"packet of {length} bytes exceeds the {self.max_packet}-byte limit")
            if n - i < length:
                break
            ptype = first >> 4
            if ptype == 0 or ptype == 15:
                raise MqttProtocolError(f"reserved packet type {ptype}")
            out.append(Packet(ptype, first & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return out
