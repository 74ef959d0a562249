"""Which devices the broker holds connected, read from mosquitto's own log: cut-offs are confirmed.

Strategy: mosquitto 2.0 has no per-client list (``$SYS`` only counts), but with
``connection_messages true`` (its default) it logs every accepted connection and every end of one.
``ConnectionLog`` follows the log file (from its start, then what is appended; a shorter file is a
rotation and is read again from its start), and keeps the set of device ids connected now. After a
reload that removed devices, the enforcer asks it whether each one is gone instead of trusting the
reload. Only strict forms count, and only for device ids (16 hex digits, which are also the broker
usernames, since ``use_username_as_clientid``): a *refused* CONNECT that reuses a device's id logs
``Client <id> disconnected, not authorised.``, which an attacker can produce at will; it says nothing
about the live connection and is ignored. mosquitto refuses control characters in client ids, so a
client id cannot start a forged line. A broker restart (``mosquitto version ... starting``) empties
the set, and its version is kept (``version``): a broker with ``retain_available false`` has no
retained ``$SYS/broker/version``, and the enforcer then checks this one instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ID = r"([0-9a-f]{16})"
_STAMP = r"(?:[^ ]+: )?"
_CONNECTED = re.compile(_STAMP + r"New client connected from \S+ as " + _ID + r" \(p\d, c\d, k\d+, u'\1'\)\.")
_GONE = (
    re.compile(_STAMP + r"Client " + _ID + r" disconnected\."),
    re.compile(_STAMP + r"Client " + _ID + r" closed its connection\."),
    re.compile(_STAMP + r"Client " + _ID + r" has exceeded timeout, disconnecting\."),
    re.compile(_STAMP + r"Socket error on client " + _ID + r", disconnecting\."),
)
_STARTING = re.compile(_STAMP + r"mosquitto version (\S+) starting")
_RUNNING = re.compile(_STAMP + r"mosquitto version (\S+) running")


class ConnectionLog:
    """The device ids the broker's log shows connected now. ``poll()`` reads what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.connected: set[str] = set()
        self.lines = 0
        self.version: str | None = None  # "mosquitto version X.Y.Z" of the last start seen in the log

    def __repr__(self) -> str:
        return f"ConnectionLog({str(self.path)!r}, connected={len(self.connected)})"

    def poll(self) -> None:
        """Read the lines appended since the last call. Raises OSError when the log cannot be read."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self._offset:  # rotated or truncated: the new file holds what happened since
                self._offset, self._partial = 0, b""
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            self.feed(raw.decode("utf-8", "replace"))

    def feed(self, line: str) -> None:
        self.lines += 1
        line = line.rstrip("\r")
        found = _CONNECTED.fullmatch(line)
        if found is not None:
            self.connected.add(found.group(1))
            return
        for pattern in _GONE:
            found = pattern.fullmatch(line)
            if found is not None:
                self.connected.discard(found.group(1))
                return
        found = _STARTING.fullmatch(line) or _RUNNING.fullmatch(line)
        if found is not None:
            self.version = f"mosquitto version {found.group(1)}"
            if found.re is _STARTING:
                self.connected.clear()

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.connected
