"""Proof that the broker has loaded a given password file: log in with a one-time canary account.

Strategy: mosquitto handles SIGHUP by setting a flag that its main loop clears *after* reloading, so a
SIGHUP that arrives during a reload is lost, and nothing tells the sender when a reload is done. Each
published password file therefore carries a fresh canary credential; a CONNECT with it succeeds only
once the broker runs on that file (the CONNECT waits while the single-threaded broker reloads). No MQTT
library is needed for one CONNECT/CONNACK/DISCONNECT, so this speaks the three packets directly.
"""

from __future__ import annotations

import socket
import struct

CANARY_USERNAME = "diams-reload-canary"  # has a '-': never a device id, never "gateway-..."


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _connect_packet(username: str, password: str) -> bytes:
    # MQTT 3.1.1, flags: username + password + clean session, keepalive 0, empty client id.
    body = _utf8("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 0) + _utf8("")
    body += _utf8(username) + _utf8(password)
    if len(body) > 127:
        raise ValueError("canary CONNECT too long")
    return bytes([0x10, len(body)]) + body


def canary_accepted(host: str, port: int, password: str, timeout: float) -> bool:
    """Whether the broker accepts the canary ``password`` now (False: refused). Raises OSError."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_connect_packet(CANARY_USERNAME, password))
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                return False  # some brokers close instead of answering a refused CONNECT
            connack += chunk
        if connack[0] != 0x20:
            raise OSError(f"unexpected answer to CONNECT: packet type {connack[0] >> 4}")
        accepted = connack[3] == 0
        if accepted:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return accepted
