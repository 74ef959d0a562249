"""Opening a SQLite state file: the gateway's counter store and the identity index.

Strategy: both are opened the same way, so the way lives here once: autocommit (``isolation_level=None``:
each caller writes its own ``BEGIN``/``COMMIT``), usable from the thread that commits (the counter
store's group commit), WAL (readers never wait for the writer), the durability the caller names
(``FULL`` where a lost write would let an OTP counter be accepted twice, ``NORMAL`` where the ledger can
always be read again), then the caller's schema. The module sits here, below ``gateway``, because the
identity index is also opened by the ledger CLI and the console, which run without a gateway.

A ``sqlite3.Error`` never leaves: the caller names the exception of its own package (``error``), so each
boundary keeps its small exception tree, and a connection that failed half-way is closed. File modes are
not set here: the files are created under the process's umask (the units set ``UMask=0077``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal


def open_state_db(
    path: Path,
    *,
    synchronous: Literal["FULL", "NORMAL"],
    schema: str,
    error: Callable[[str], Exception],
    what: str,
    upgrade: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """Open (and create) the database at ``path`` and its ``schema`` (idempotent DDL), then run
    ``upgrade`` (migrations of older files). Fails with ``error("cannot open <what> <path>: <why>")``."""
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
        if upgrade is not None:
            upgrade(db)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise error(f"cannot open {what} {path}: {exc}") from None
    return db
