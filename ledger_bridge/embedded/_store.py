"""The embedded chain's file: py-evm's key-value database and a log index in one SQLite file.

Strategy: py-evm writes trie nodes, headers, receipts and its transaction index through a plain
key-value interface. :class:`ChainStore` keeps every write in an in-memory buffer (reads look in
the buffer first) and writes nothing to disk until :meth:`ChainStore.commit_block`, which puts the
buffer, the block's log index rows and the metadata (head number) in ONE SQLite transaction. A
crash at any moment therefore leaves the file at the end of some mined block, never between two.

py-evm's own ``AtomicDB`` is layered *on top of* this store; its key-by-key copy (not crash-safe
when it targets a disk store) only reaches the memory buffer here, so it is harmless.

Durability: WAL journal with ``synchronous=FULL``: each block's commit is fsync'd before the
transaction hash is returned to web3, so a returned receipt survives ``kill -9`` and power loss.
(``NORMAL`` would survive ``kill -9`` but may lose the last blocks on power loss; measured here, a
block's commit takes ~0.5 ms with ``FULL`` against ~0.25 ms with ``NORMAL``, next to ~6 ms to
execute and mine the transaction, so FULL costs almost nothing.)
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from eth.db.backends.base import BaseDB

from ._errors import EmbeddedChainError

SCHEMA_VERSION: Final = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    block_hash BLOB NOT NULL,
    address BLOB NOT NULL,
    topic0 BLOB, topic1 BLOB, topic2 BLOB, topic3 BLOB,
    data BLOB NOT NULL,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logs_by_address ON logs (address, block_number);
CREATE INDEX IF NOT EXISTS logs_by_topic0 ON logs (topic0, block_number);
"""

_DELETED: Final = object()

#: One row of the log index, in the column order of the ``logs`` table.
_Topic = bytes | None
LogRow = tuple[int, int, int, bytes, bytes, bytes, _Topic, _Topic, _Topic, _Topic, bytes]

#: A topic filter position: any topic (None), one topic, or any of several.
TopicFilter = bytes | Sequence[bytes] | None


class ChainStore(BaseDB):
    """py-evm's base database over one SQLite file, written once per block."""

    def __init__(self, connection: sqlite3.Connection, lock_fd: int) -> None:
        self._db = connection
        self._lock_fd = lock_fd
        self._buffer: dict[bytes, object] = {}

    @classmethod
    def open(cls, path: Path) -> ChainStore:
        """Open (creating if needed) the file at ``path``, exclusively.

        Two writers would each mine from their own in-memory head and fork the file, so a
        ``<file>.lock`` sidecar is ``flock``ed for as long as the store is open (the kernel drops
        it if the process dies). A sidecar, not the database file: closing any descriptor of the
        database would release SQLite's own POSIX locks.
        """
        lock_fd = _lock(path)
        try:
            return cls(_connect(path), lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise


    # py-evm's database interface -------------------------------------------------------

    def __getitem__(self, key: bytes) -> bytes:
        value = self._buffer.get(key)
        if value is _DELETED:
            raise KeyError(key)
        if value is not None:
            return value  # type: ignore[return-value]
        try:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise EmbeddedChainError(f"cannot read the chain file: {exc}") from exc
        if row is None:
            raise KeyError(key)
        result: bytes = row[0]
        return result

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._buffer[bytes(key)] = bytes(value)

    def __delitem__(self, key: bytes) -> None:
        # Lenient like a batch delete: py-evm only deletes keys it knows about.
        self._buffer[bytes(key)] = _DELETED

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    # Commit, metadata, log index ---------------------------------------------------------

    @property
    def has_pending_writes(self) -> bool:
        return bool(self._buffer)

    def commit_block(self, *, meta: dict[str, str], log_rows: Iterable[LogRow] = ()) -> None:
        """Write the buffered writes, ``log_rows`` and ``meta`` as one durable transaction."""
        puts = [(k, v) for k, v in self._buffer.items() if v is not _DELETED]
        deletes = [(k,) for k, v in self._buffer.items() if v is _DELETED]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", puts)
                if deletes:
                    self._db.executemany("DELETE FROM kv WHERE key = ?", deletes)
                self._db.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", log_rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", meta.items()
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise EmbeddedChainError(f"cannot commit a block to the chain file: {exc}") from exc
        self._buffer.clear()

    def read_meta(self) -> dict[str, str]:
        try:
            rows = self._db.execute("SELECT name, value FROM meta").fetchall()
        except sqlite3.Error as exc:
            raise EmbeddedChainError(f"cannot read the chain file: {exc}") from exc
        return dict(rows)

    def find_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        addresses: Sequence[bytes] = (),
        topics: Sequence[TopicFilter] = (),
    ) -> list[LogRow]:
        """Log rows in ``[from_block, to_block]`` matching the filter, in chain order."""
        where = ["block_number BETWEEN ? AND ?"]
        args: list[object] = [from_block, to_block]
        if addresses:
            where.append(f"address IN ({', '.join('?' * len(addresses))})")
            args.extend(addresses)
        if len(topics) > 4:  # a log has at most four topics: a fifth position never matches
            return []
        if topics:  # like geth: a log shorter than the filter never matches, even on wildcards
            where.append(f"topic{len(topics) - 1} IS NOT NULL")
        for position, wanted in enumerate(topics):
            if wanted is None:
                continue
            choices = [wanted] if isinstance(wanted, bytes | bytearray) else list(wanted)
            if not choices:
                continue
            where.append(f"topic{position} IN ({', '.join('?' * len(choices))})")
            args.extend(choices)
        sql = f"SELECT * FROM logs WHERE {' AND '.join(where)} ORDER BY block_number, log_index"  # noqa: S608
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise EmbeddedChainError(f"cannot read the log index: {exc}") from exc

    def close(self) -> None:
        self._buffer.clear()
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise EmbeddedChainError(f"cannot close the chain file: {exc}") from exc
        finally:
            os.close(self._lock_fd)


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise EmbeddedChainError(f"cannot open the chain file {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise EmbeddedChainError(f"the chain file {path} is in use by another EmbeddedChain") from exc
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    connection = None
    try:
        connection = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, cached_statements=64
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        if connection is not None:
            connection.close()
        raise EmbeddedChainError(f"cannot open the chain file {path}: {exc}") from exc
    return connection
