"""Durable OTP counter floors, one per (device, epoch), with group commit.

Strategy: the protocol forbids accepting a counter twice, even across ``kill -9``, so a counter the
gateway role accepts must be on disk before the CHALLENGE leaves. An fsync per handshake costs ~1 ms
here, which would cap the gateway near 1,000 handshakes/s; instead every counter accepted during one
event-loop turn joins one SQLite transaction (WAL, synchronous=FULL), and the challenges of that turn
are sent when it commits. Throughput then grows with load while each handshake waits one commit.

The commit runs on a worker thread with its own connection (sqlite releases the GIL while it syncs),
one at a time: while a batch is being made durable the event loop keeps serving and the counters it
accepts meanwhile form the next batch, which starts as soon as the previous one is done (pipelined
group commit). Committed inline, each ~4 ms commit stalled every connection of the gateway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from pathlib import Path

from ledger_bridge.state_db import open_state_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (device BLOB NOT NULL, epoch INTEGER NOT NULL, counter INTEGER NOT NULL,
    nonce BLOB, PRIMARY KEY (device, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (device BLOB NOT NULL, epoch INTEGER NOT NULL,
    PRIMARY KEY (device, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (device BLOB PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
"""


class CounterStoreError(Exception):
    """The counter database could not be read or written."""


class CounterStore:
    def __init__(self, path: Path, *, defer_open: bool = False) -> None:
        """Opens the database at once, unless ``defer_open``: then ``open()`` does (the gateway builds
        its parts touching no disk, and opens them when it starts)."""
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._batch: dict[tuple[bytes, int], tuple[int, bytes | None]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._committing = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None  # the commit thread's own connection
        self.commits = 0
        if not defer_open:
            self.open()

    def open(self) -> None:
        """Open (and create) the database; a no-op once open."""
        if self._conn is None:
            self._conn = open_state_db(self.path, synchronous="FULL", schema=_SCHEMA,
                                       error=CounterStoreError, what="counter store")

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CounterStoreError(f"counter store {self.path} is not open")
        return self._conn

    def __repr__(self) -> str:
        return f"CounterStore({self.path})"

    def floor(self, device_id: bytes, epoch: int) -> int:
        """The highest counter ever accepted for (device, epoch), or -1."""
        return self.floor_and_nonce(device_id, epoch)[0]

    def floor_and_nonce(self, device_id: bytes, epoch: int) -> tuple[int, bytes | None]:
        """(highest accepted counter, the device nonce of the HELLO that set it), or (-1, None)."""
        row = self._db.execute("SELECT counter, nonce FROM counters WHERE device=? AND epoch=?",
                               (device_id, epoch)).fetchone()
        return (-1, None) if row is None else (int(row[0]), None if row[1] is None else bytes(row[1]))

    def floors(self) -> dict[tuple[bytes, int], int]:
        rows = self._db.execute("SELECT device, epoch, counter FROM counters")
        return {(bytes(d), e): c for d, e, c in rows}

    def commit_now(self, device_id: bytes, epoch: int, counter: int, nonce: bytes | None = None) -> None:
        """Make one counter durable synchronously (tests, tools)."""
        self._queue(device_id, epoch, counter, nonce)
        self._flush()

    def _queue(self, device_id: bytes, epoch: int, counter: int, nonce: bytes | None) -> None:
        key = (device_id, epoch)
        if counter > self._batch.get(key, (-1, None))[0]:
            self._batch[key] = (counter, nonce)

    def accept(self, device_id: bytes, epoch: int, counter: int,
               nonce: bytes | None = None) -> asyncio.Future[None]:
        """Queue a counter (and the nonce of its HELLO); the future completes once they are durable."""
        self._queue(device_id, epoch, counter, nonce)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if not self._scheduled and not self._committing:
            self._scheduled = True
            loop.call_soon(self._start_commit)
        return fut

    def _take_rows(self) -> list[tuple[bytes, int, int, bytes | None]]:
        rows = [(d, e, c, n) for (d, e), (c, n) in self._batch.items()]
        self._batch = {}
        return rows

    def _flush(self) -> None:
        """Commit the pending batch now, on this thread (tests, tools, close)."""
        if self._batch:
            _commit(self._db, self._take_rows())
            self.commits += 1

    def _start_commit(self) -> None:
        self._scheduled = False
        if self._committing or not self._batch:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="counters")
        rows, waiters, self._waiters = self._take_rows(), self._waiters, []
        self._committing = True
        done = asyncio.get_running_loop().run_in_executor(self._executor, self._commit_on_thread, rows)
        done.add_done_callback(lambda f: self._committed(f, waiters))

    def _commit_on_thread(self, rows: list[tuple[bytes, int, int, bytes | None]]) -> None:
        if self._writer is None:
            try:
                self._writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._writer.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise CounterStoreError(f"cannot open counter store {self.path}: {exc}") from None
        _commit(self._writer, rows)

    def _committed(self, done: asyncio.Future[None], waiters: list[asyncio.Future[None]]) -> None:
        self._committing = False
        exc = CounterStoreError("counter commit cancelled") if done.cancelled() else done.exception()
        if exc is None:
            self.commits += 1
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
        if self._batch:  # accepted while that batch was committing: the next batch, at once
            self._start_commit()

    # ---- quarantine: devices a clone was detected for, kept across restarts ----
    def quarantined(self) -> set[tuple[bytes, int]]:
        return {(bytes(d), e) for d, e in self._db.execute("SELECT device, epoch FROM quarantine")}

    def set_quarantine(self, device_id: bytes, epoch: int) -> None:
        self._write("quarantine", [("INSERT OR IGNORE INTO quarantine VALUES (?, ?)", (device_id, epoch))])

    def lift_quarantine(self, device_id: bytes) -> None:
        self._write("quarantine", [("DELETE FROM quarantine WHERE device = ?", (device_id,))])

    # ---- bans: devices cut off at the broker until a wall-clock time (PreAuthBan), kept across restarts ----
    def bans(self, now: float) -> dict[bytes, float]:
        """The bans in force at ``now`` (seconds since the epoch) -> {device: when it ends}; the bans that
        have ended are dropped."""
        self._write("ban", [("DELETE FROM bans WHERE until <= ?", (now,))])
        return {bytes(d): float(u) for d, u in self._db.execute("SELECT device, until FROM bans")}

    def set_ban(self, device_id: bytes, until: float, *, now: float, keep: int) -> None:
        """Record a ban of ``device_id`` ending at ``until`` (it replaces an earlier one). Bounded: the
        bans that have ended at ``now`` are dropped, and past ``keep`` those ending soonest."""
        self._write("ban", [
            ("DELETE FROM bans WHERE until <= ?", (now,)),
            ("INSERT OR REPLACE INTO bans VALUES (?, ?)", (device_id, until)),
            ("DELETE FROM bans WHERE device IN"
             " (SELECT device FROM bans ORDER BY until DESC LIMIT -1 OFFSET ?)", (keep,)),
        ])

    def lift_ban(self, device_id: bytes, until: float) -> None:
        """Forget the ban of ``device_id`` that ends at ``until`` (not a later one)."""
        self._write("ban", [("DELETE FROM bans WHERE device = ? AND until = ?", (device_id, until))])

    def _write(self, what: str, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        """Run ``statements`` in one transaction (a failure leaves the table as it was)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                db.execute(sql, args)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise CounterStoreError(f"{what} update failed: {exc}") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # a batch in flight completes first
        if self._writer is not None:
            self._writer.close()
        if self._conn is not None:
            self._flush()
            self._conn.close()
            self._conn = None


def _commit(db: sqlite3.Connection, rows: list[tuple[bytes, int, int, bytes | None]]) -> None:
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT(device, epoch)"
            " DO UPDATE SET counter = excluded.counter, nonce = excluded.nonce"
            " WHERE excluded.counter > counters.counter", rows)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise CounterStoreError(f"counter commit failed: {exc}") from None
