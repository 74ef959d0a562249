"""Reading a gateway's audit trail: its log (one JSON record per line) and the ``.anchors`` sidecar.

The gateway writes both (``gateway/audit.py``, which builds on this module); the console and
``diams-ledger show device --audit-log`` read them. The reader lives here, below both, so that
ledger_bridge never imports the gateway (``tests/house/test_imports.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["AuditError", "anchor_records", "records"]


class AuditError(Exception):
    """The audit log is unreadable or its chain is broken (the message says where)."""


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The log's records in order; a torn last line (a crash mid-write) ends it."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except ValueError:
                raise AuditError(f"{path}:{n}: not a JSON record") from None


def anchor_records(path: Path) -> list[dict[str, Any]]:
    """The ``.anchors`` sidecar's records (empty when there is none)."""
    sidecar = path.with_name(path.name + ".anchors")
    if not sidecar.exists():
        return []
    return [json.loads(raw) for raw in sidecar.read_text().splitlines() if raw.strip()]
