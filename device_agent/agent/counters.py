"""The counter file on a Raspberry Pi: durable writes of what the core's policy decides.

Strategy: the reservation rule and the file's format are the core's (``device_agent.core.policy``:
one format for every agent, ``parse_counters``/``format_counters``); this module only makes a write
durable before the HELLO that needs it leaves: temp file (0600), fsync, rename, fsync of the
directory. Files written by earlier versions of this agent (JSON, ``{"epoch": 3, "reserved":
{"gw-a/3": 47}}``) are read once and rewritten in the one format at the next reservation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from device_agent.core import policy as _policy

from .keystore import write_private

__all__ = ["CounterFile", "read_epoch"]

_P: Any = _policy


class CounterFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0

    def __repr__(self) -> str:
        return f"CounterFile({self.path})"

    def read(self) -> str | None:
        """The file's text in the one format (None when there is no file yet); ValueError if damaged."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if text.lstrip().startswith("{"):
            return _from_legacy_json(text, self.path)
        try:
            _P.parse_counters(text)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"counter file {self.path} is damaged: {exc}") from None
        return text

    def write(self, text: str) -> None:
        write_private(self.path, text.encode())
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.writes += 1


def read_epoch(path: Path) -> int:
    """The committed epoch recorded in a counter file (0 when there is none)."""
    text = CounterFile(path).read()
    return 0 if text is None else int(_P.parse_counters(text)[0])


def _from_legacy_json(text: str, path: Path) -> str:
    try:
        data = json.loads(text)
        reserved = {(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1])): int(v)
                    for k, v in data.get("reserved", {}).items()}
        return str(_P.format_counters(int(data.get("epoch", 0)), reserved))
    except (ValueError, AttributeError, IndexError) as exc:
        raise ValueError(f"counter file {path} is damaged: {exc}") from None
