"""Durable device state: OTP counters per (gateway, epoch), written ahead, and the committed epoch.

Strategy: a counter must be durable *before* the HELLO that uses it leaves the device (PROTOCOL.md
section 4), or a crash could make the device reuse it, which the gateway treats as a replay or a
clone. Writing the file before every HELLO would wear flash, so the store reserves a block of
``block`` counters in one write and hands them out from memory; after a restart it continues past
the reserved block (the unused rest is skipped: a gap the gateway's look-ahead window absorbs, as
long as fewer than window/block restarts happen between two successful handshakes).

The file is JSON, replaced atomically (temp file, fsync, rename, fsync of the directory):
``{"epoch": 3, "reserved": {"gw-a/3": 47}}`` -- the highest counter reserved per gateway and epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .keystore import write_private

__all__ = ["CounterStore"]

MAX_COUNTER = 0xFFFFFFFF


class CounterStore:
    def __init__(self, path: Path, *, initial_epoch: int = 0, block: int = 16) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = path
        self.block = block
        self.writes = 0
        self._next: dict[str, int] = {}
        state = self._read()
        self._epoch = max(int(state.get("epoch", initial_epoch)), initial_epoch)
        self._reserved: dict[str, int] = {str(k): int(v) for k, v in state.get("reserved", {}).items()}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"counter file {self.path} is not a JSON object")
        return data

    def _write(self) -> None:
        body = json.dumps({"epoch": self._epoch, "reserved": self._reserved}, sort_keys=True)
        write_private(self.path, body.encode() + b"\n")
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.writes += 1

    @property
    def epoch(self) -> int:
        """The committed epoch: the highest one a handshake has succeeded under (or the configured one)."""
        return self._epoch

    def commit_epoch(self, epoch: int) -> None:
        """Called only after a handshake under ``epoch`` succeeded; counters of older epochs are dropped."""
        if epoch <= self._epoch:
            return
        self._epoch = epoch
        self._reserved = {k: v for k, v in self._reserved.items() if int(k.rsplit("/", 1)[1]) >= epoch}
        self._write()

    def usage(self) -> dict[str, tuple[int, int]]:
        """``"<gateway>/<epoch>"`` -> (the next counter to hand out, the last one reserved on flash)."""
        return {k: (self._next.get(k, r + 1), r) for k, r in self._reserved.items()}

    def next_counter(self, gateway: str, epoch: int) -> int:
        """The counter for the next HELLO to ``gateway`` under ``epoch``; durable when this returns."""
        key = f"{gateway}/{epoch}"
        reserved = self._reserved.get(key, -1)
        nxt = self._next.get(key, reserved + 1)
        if nxt > MAX_COUNTER:
            raise OverflowError("OTP counters exhausted for this gateway and epoch: the owner must re-key")
        if nxt > reserved:
            self._reserved[key] = min(nxt + self.block - 1, MAX_COUNTER)
            self._write()
        self._next[key] = nxt + 1
        return nxt
