"""The gateway's audit log: append-only, hash-chained, anchored on the ledger as Merkle roots.

Strategy: one JSON line per record; each record carries ``prev`` (the previous record's hash) and
``hash`` = SHA-256 over the previous hash and the record's canonical JSON without ``hash``. Editing,
removing or reordering a record breaks every later link. Periodically the gateway anchors the hashes
of the records since the last anchor as one Merkle root on chain (`ledger_bridge.merkle`), so the trail
is tamper-evident without a transaction per authentication.

fsync policy: a record is written to the OS at once and fsync'd within ``fsync_interval`` seconds
(default 0.2 s; the gateway does it on a worker thread so the event loop never waits on the disk),
immediately for the events in ``URGENT`` (clone alerts, cut-offs), and always before
it is anchored and on close. A crash loses at most the last interval's records; a torn last line is
detected and dropped when the log is reopened, and the chain stays verifiable.

Verifying (``diams-gateway audit verify [--anchors [--config]]``): ``verify_file`` checks the chain;
``check_anchors`` recomputes anchored batches' Merkle roots *from the log*. Without a ledger it checks
the ``.anchors`` sidecar (a local convenience, nothing more). With a ledger the chain is the truth: the
batches come from this gateway's ``Anchored`` events and its next sequence number on chain, never from
the sidecar, and every one of them must be reproduced by the log. Someone who rewrites the log, its
hash chain, and empties or rewrites the sidecar still fails: the chain lists the batches it must match.

Reading the log and the sidecar (``records``, ``anchor_records``, ``AuditError``) lives in
``ledger_bridge.audit_trail``, below both the gateway and the console that read it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from ledger_bridge.audit_trail import AuditError as AuditError
from ledger_bridge.audit_trail import anchor_records as anchor_records
from ledger_bridge.audit_trail import records as records
from ledger_bridge.merkle import leaf_hash, merkle_root

if TYPE_CHECKING:
    from ledger_bridge.model import AnchorRecord

log = logging.getLogger("diams.gateway.audit")

URGENT = frozenset({"clone_detected", "cut_off", "cut_off_unconfirmed"})  # events the gateway acts on at once
GENESIS = "0" * 64


class AuditUnavailable(AuditError):
    """A record could not be written (disk full, I/O error): nothing was appended, the chain is intact.

    The gateway fails closed on it: no session is granted that the log cannot record."""


def _digest(prev: str, body: dict[str, Any]) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(bytes.fromhex(prev) + canon).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Anchor:
    first_seq: int
    last_seq: int
    count: int
    root: bytes


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        fsync_interval: float = 0.2,
        clock: Callable[[], float] = time.time,
        defer_open: bool = False,
    ) -> None:
        """Opens the log at once (recovering a torn last record), unless ``defer_open``: then
        ``open()`` does (the gateway builds its parts touching no disk, and opens them when it starts)."""
        self.path = path
        self.fsync_interval = fsync_interval
        self.deferred_sync = False  # True: the owner calls sync() every fsync_interval (off the event loop)
        self._clock = clock
        self.seq, self.head = 0, GENESIS
        self.anchors_path = path.with_name(path.name + ".anchors")
        self.anchored_seq = 0
        self._since: list[bytes] = []  # hashes of the records after anchored_seq
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._file: BinaryIO | None = None
        if not defer_open:
            self.open()

    def open(self) -> None:
        """Read the anchors sidecar, recover the log, and open it for appending; a no-op once open."""
        if self._file is not None:
            return
        path = self.path
        if self.anchors_path.exists():
            for raw in self.anchors_path.read_text().splitlines():
                if raw.strip():
                    self.anchored_seq = max(self.anchored_seq, json.loads(raw)["last_seq"])
        if path.exists():
            self._recover()
        self._file = open(path, "ab", buffering=0)

    @property
    def _f(self) -> BinaryIO:
        if self._file is None:
            raise AuditUnavailable(f"audit log {self.path} is not open")
        return self._file

    def __repr__(self) -> str:
        return f"AuditLog({self.path}, seq={self.seq})"

    def _recover(self) -> None:
        good = 0
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    log.warning("audit log %s: dropping a torn last record (%d bytes)", self.path, len(raw))
                    break
                rec = json.loads(raw)
                self.seq, self.head = rec["seq"], rec["hash"]
                if rec["seq"] > self.anchored_seq:
                    self._since.append(bytes.fromhex(rec["hash"]))
                good += len(raw)
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good)
        verify_file(self.path)

    def append(self, event: str, **fields: Any) -> int:
        """Append one record; -> its sequence number. Fields must be JSON values and never secrets.

        Raises ``AuditUnavailable`` when the record cannot be written (e.g. the disk is full): then
        nothing was appended (a partial line is cut off again) and the chain continues from the last
        record that was, so the log stays verifiable and the next append links to it."""
        seq = self.seq + 1
        body = {"seq": seq, "ts": round(self._clock(), 3), "event": event, "prev": self.head, **fields}
        head = _digest(self.head, body)
        body["hash"] = head
        line = json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        size = self._f.tell()
        try:
            written = self._f.write(line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._f.fileno(), size)
                self._f.seek(size)
            raise AuditUnavailable(
                f"audit log {self.path}: record {seq} not written ({exc.strerror or exc})"
            ) from None
        self.seq, self.head = seq, head
        self._since.append(bytes.fromhex(self.head))
        self._unsynced += 1
        if event in URGENT or (
            not self.deferred_sync and time.monotonic() - self._last_sync >= self.fsync_interval
        ):
            self.sync()
        return self.seq

    def sync(self) -> None:
        """fsync what was appended. Safe to call from a worker thread (``deferred_sync``)."""
        if self._unsynced:
            self._unsynced = 0  # appends racing with this fsync are synced now or at the next call
            os.fsync(self._f.fileno())
        self._last_sync = time.monotonic()

    def next_anchor(self) -> Anchor | None:
        """The Merkle anchor of the records not yet anchored (synced to disk first), or None."""
        self.sync()
        if not self._since:
            return None
        first = self.anchored_seq + 1
        return Anchor(
            first_seq=first,
            last_seq=first + len(self._since) - 1,
            count=len(self._since),
            root=merkle_root([leaf_hash(h) for h in self._since]),
        )

    def mark_anchored(self, anchor: Anchor, tx: str) -> None:
        """Record that ``anchor`` is on chain (transaction ``tx``).

        The chain is the truth: the next anchor starts after this one even when the sidecar line
        cannot be written (disk full). Then ``AuditUnavailable`` is raised, no partial line is left in
        the sidecar, and a gateway started later learns where to go on from the chain
        (``anchored_through``)."""
        self.anchored_through(anchor.last_seq)
        line = {
            "first_seq": anchor.first_seq,
            "last_seq": anchor.last_seq,
            "count": anchor.count,
            "root": anchor.root.hex(),
            "tx": tx,
        }
        try:
            _append_durably(self.anchors_path, (json.dumps(line, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise AuditUnavailable(
                f"audit anchors {self.anchors_path}: the record of anchor {anchor.first_seq}.."
                f"{anchor.last_seq} (on chain, tx {tx}) not written ({exc.strerror or exc})"
            ) from None

    def anchored_through(self, last_seq: int) -> None:
        """Records up to ``last_seq`` are anchored on chain: the next anchor starts after them."""
        last_seq = min(last_seq, self.seq)
        if last_seq <= self.anchored_seq:
            return
        self._since = self._since[last_seq - self.anchored_seq :]
        self.anchored_seq = last_seq

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None


def _append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync it; on a failed or short write, nothing of it stays in the file."""
    # not secret (0640): the console, in the gateway's group, reads audit logs
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def verify_file(path: Path) -> tuple[int, str]:
    """Check every link of the chain; -> (records, head hash), or raise AuditError naming the line."""
    prev, seq = GENESIS, 0
    for n, rec in enumerate(records(path), 1):
        claimed = rec.pop("hash", None)
        if rec.get("prev") != prev or rec.get("seq") != seq + 1:
            raise AuditError(f"{path}:{n}: chain broken (record does not follow record {seq})")
        if claimed != _digest(prev, rec):
            raise AuditError(f"{path}:{n}: record {rec.get('seq')} was altered (hash mismatch)")
        prev, seq = claimed, rec["seq"]
    return seq, prev


def batch_root(path: Path, first_seq: int, last_seq: int) -> tuple[int, bytes]:
    """Recompute an anchor from the log: -> (count, root) over records first_seq..last_seq."""
    hashes = [bytes.fromhex(r["hash"]) for r in records(path) if first_seq <= r["seq"] <= last_seq]
    return len(hashes), merkle_root([leaf_hash(h) for h in hashes])


class _AnchorReader(Protocol):
    async def anchors(self, gateway_id: bytes) -> Sequence[AnchorRecord]: ...
    async def next_anchor_seq(self, gateway_id: bytes) -> int: ...


@dataclass(frozen=True, kw_only=True)
class AnchorCheck:
    """One anchored batch as checked: ``problem`` is empty when it holds."""

    first_seq: int
    last_seq: int
    count: int
    root: str  # recomputed from the log, hex
    tx: str
    on_chain: bool
    problem: str = ""


async def check_anchors(
    path: Path, ledger: _AnchorReader | None = None, *, gateway_id: bytes | None = None
) -> list[AnchorCheck]:
    """Recompute anchored batches from the log. Without ``ledger``: the sidecar's records. With it
    (``gateway_id``, the 32-byte on-chain id, required): every batch this gateway anchored on chain,
    whatever the sidecar says, plus a check that the chain's event list reaches its next sequence."""
    if ledger is None:
        return _check_sidecar(path)
    if gateway_id is None:
        raise ValueError("checking against the chain needs the gateway's on-chain id")
    on_chain = sorted(await ledger.anchors(gateway_id), key=lambda a: a.first_seq)
    next_seq = int(await ledger.next_anchor_seq(gateway_id))
    logged = _log_hashes(path)
    last_logged = max(logged, default=0)
    out = []
    for a in on_chain:
        first, last = int(a.first_seq), int(a.last_seq)
        hashes = [logged[s] for s in range(first, last + 1) if s in logged]
        root = merkle_root([leaf_hash(h) for h in hashes]) if hashes else b""
        problem = ""
        if last > last_logged:
            problem = f"the log ends at record {last_logged}, before this anchored batch ends"
        elif len(hashes) != a.count or root != bytes(a.merkle_root):
            problem = "the log does not reproduce the root anchored on chain (records altered or removed)"
        out.append(
            AnchorCheck(
                first_seq=first,
                last_seq=last,
                count=len(hashes),
                root=bytes(a.merkle_root).hex(),
                tx=getattr(a, "transaction_hash", ""),
                on_chain=True,
                problem=problem,
            )
        )
    covered = max((int(a.last_seq) for a in on_chain), default=0)
    if next_seq and next_seq != covered + 1:  # the node's event list is missing batches: never pass
        out.append(
            AnchorCheck(
                first_seq=covered + 1,
                last_seq=next_seq - 1,
                count=0,
                root="",
                tx="",
                on_chain=True,
                problem=f"the chain's next sequence is {next_seq} but its "
                f"Anchored events cover up to {covered}: the event list is incomplete",
            )
        )
    chain_roots = {bytes(a.merkle_root).hex() for a in on_chain}
    for rec in anchor_records(path):  # local records the chain does not know: reported, never trusted
        if rec.get("root") not in chain_roots:
            out.append(
                AnchorCheck(
                    first_seq=int(rec["first_seq"]),
                    last_seq=int(rec["last_seq"]),
                    count=int(rec["count"]),
                    root=str(rec["root"]),
                    tx=str(rec.get("tx", "")),
                    on_chain=False,
                    problem="the sidecar names a root this gateway never anchored on chain",
                )
            )
    return out


def _log_hashes(path: Path) -> dict[int, bytes]:
    return {int(r["seq"]): bytes.fromhex(r["hash"]) for r in records(path)}


def _check_sidecar(path: Path) -> list[AnchorCheck]:
    out = []
    for a in anchor_records(path):
        first, last = int(a["first_seq"]), int(a["last_seq"])
        count, root = batch_root(path, first, last)
        problem = ""
        if count != a["count"] or root.hex() != a["root"]:
            problem = "the log no longer matches the local anchor record"
        out.append(
            AnchorCheck(
                first_seq=first,
                last_seq=last,
                count=count,
                root=root.hex(),
                tx=str(a.get("tx", "")),
                on_chain=False,
                problem=problem,
            )
        )
    return out
