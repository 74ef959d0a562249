"""Proof that the broker has loaded a given password file: log in with a one-time canary account.

Strategy: mosquitto handles SIGHUP by setting a flag that its main loop clears *after* reloading, so a
SIGHUP that arrives during a reload is lost, and nothing tells the sender when a reload is done. Each
published password file therefore carries a fresh canary credential; a CONNECT with it succeeds only
once the broker runs on that file (the CONNECT waits while the single-threaded broker reloads). The
same login reads the running broker's version from ``$SYS/broker/version`` (retained, readable by the
canary account only), which the enforcer checks at every reload (``_version``). A broker with
``retain_available false`` (devices may not retain) keeps no retained message, that one included: the
SUBSCRIBE is followed by a PINGREQ, and since mosquitto sends retained messages right after the SUBACK,
a PINGRESP that comes first means "no version here" at once (the enforcer then reads the version from
the broker's log). No MQTT library is needed for CONNECT/SUBSCRIBE/PUBLISH/PINGREQ/DISCONNECT, so this
speaks the few packets directly.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

CANARY_USERNAME = "diams-reload-canary"  # has a '-': never a device id, never "gateway-..."
VERSION_TOPIC = "$SYS/broker/version"


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    accepted: bool
    version: str | None = None  # the payload of $SYS/broker/version, when accepted and readable


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(username: str, password: str, client_id: str = "") -> bytes:
    """MQTT 3.1.1 CONNECT, flags: username + password + clean session, keepalive 0."""
    body = _utf8("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 0) + _utf8(client_id)
    body += _utf8(username) + _utf8(password)
    if len(body) > 127:
        raise ValueError("canary CONNECT too long")
    return bytes([0x10, len(body)]) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    head = _recv_exact(sock, 1)
    if head is None:
        return None
    length, shift = 0, 0
    for _ in range(4):
        byte = _recv_exact(sock, 1)
        if byte is None:
            return None
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    else:
        raise OSError("malformed MQTT remaining length")
    body = _recv_exact(sock, length) if length else b""
    return None if body is None else (head[0], body)


def _read_version(sock: socket.socket) -> str | None:
    topic = VERSION_TOPIC.encode()
    subscribe = bytes([0x82, 2 + 2 + len(topic) + 1]) + b"\x00\x01" + _utf8(VERSION_TOPIC) + b"\x00"
    sock.sendall(subscribe + b"\xc0\x00")  # SUBSCRIBE, PINGREQ
    while True:
        packet = _read_packet(sock)
        if packet is None:
            return None
        kind, body = packet
        if kind == 0x90:  # SUBACK: 0x80 means the ACL refused; nothing will come
            if body[2:3] == b"\x80":
                return None
        elif kind == 0xD0:  # PINGRESP before any retained version: the broker keeps none
            return None
        elif kind >> 4 == 3:  # PUBLISH (QoS 0: topic, then payload)
            size = struct.unpack("!H", body[:2])[0]
            if body[2 : 2 + size] == topic:
                return body[2 + size :].decode("utf-8", "replace")


def open_socket(host: str, port: int, timeout: float, tls: ssl.SSLContext | None) -> socket.socket:
    """A TCP connection to the broker (TLS when ``tls``: the broker's certificate and name verified)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def canary_login(
    host: str,
    port: int,
    password: str,
    timeout: float,
    *,
    read_version: bool = True,
    tls: ssl.SSLContext | None = None,
) -> CanaryAnswer:
    """Log in with the canary ``password``; when accepted, also read the broker version. Raises OSError."""
    with open_socket(host, port, timeout, tls) as sock:
        sock.sendall(connect_packet(CANARY_USERNAME, password))
        connack = _recv_exact(sock, 4)
        if connack is None:
            return CanaryAnswer(False)  # some brokers close instead of answering a refused CONNECT
        if connack[0] != 0x20:
            raise OSError(f"unexpected answer to CONNECT: packet type {connack[0] >> 4}")
        if connack[3] != 0:
            return CanaryAnswer(False)
        version = _read_version(sock) if read_version else None
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        return CanaryAnswer(True, version)


def canary_accepted(host: str, port: int, password: str, timeout: float) -> bool:
    """Whether the broker accepts the canary ``password`` now (False: refused). Raises OSError."""
    return canary_login(host, port, password, timeout, read_version=False).accepted
