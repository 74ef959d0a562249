"""The local identity index: what a gateway knows of the ledger, in SQLite, without calling the chain.

Strategy: the contracts emit an event for every state change, so the index is a fold of the
channel's events. ``IdentityIndex.sync()`` reads the events of the blocks between its watermark and
the chain head minus ``confirmations``, keeps them in a journal, applies them to the derived tables
(devices, grants, gateways, policies) and moves the watermark, all in one SQLite transaction: a
restart resumes from the watermark and catches up on what happened while the gateway was down.

Reorgs: the index keeps the hashes of the blocks it synced. Before each sync it checks that the
chain still has the block at its watermark; if not, it walks back to the last common block, drops
the journal's events after it, rebuilds the rows those events touched from the journal, and syncs
forward again. A reorg deeper than the kept hashes rebuilds everything from the deployment block.

Subscribers get the ids of the devices that changed after every sync, those that *lost* rights
(suspended, revoked, decommissioned, transferred, new epoch, gateway deauthorized) first.

The hot path (``device()``) is one indexed SQLite read; the gateway caches on top of it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .model import DeviceState, LedgerEvent, split_streams
from .state_db import open_state_db

log = logging.getLogger("diams.ledger.index")

KEPT_BLOCK_HASHES = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS journal (block INTEGER NOT NULL, log_index INTEGER NOT NULL, name TEXT NOT NULL,
    device BLOB, gateway BLOB, policy BLOB, args TEXT NOT NULL, PRIMARY KEY (block, log_index));
CREATE INDEX IF NOT EXISTS journal_device ON journal (device);
CREATE TABLE IF NOT EXISTS devices (id BLOB PRIMARY KEY, state INTEGER NOT NULL, epoch INTEGER NOT NULL,
    firmware BLOB NOT NULL, policy BLOB, owner TEXT, manufacturer TEXT, block INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_state ON devices (state);
CREATE INDEX IF NOT EXISTS devices_owner ON devices (owner COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS grants (device BLOB NOT NULL, gateway BLOB NOT NULL, epoch INTEGER NOT NULL,
    commitment BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (device, gateway)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateways (id BLOB PRIMARY KEY, x25519 BLOB NOT NULL, account TEXT NOT NULL,
    operator TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policies (id BLOB PRIMARY KEY, publish TEXT NOT NULL, subscribe TEXT NOT NULL,
    author TEXT NOT NULL, name BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rekeys (device BLOB PRIMARY KEY, gateway BLOB NOT NULL, epoch INTEGER NOT NULL,
    sealed BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clone_alerts (device BLOB NOT NULL, epoch INTEGER NOT NULL,
    PRIMARY KEY (device, epoch)) WITHOUT ROWID;
"""


def _upgrade(db: sqlite3.Connection) -> None:
    columns = {r[1] for r in db.execute("PRAGMA table_info(policies)")}
    if "name" not in columns:  # an index written before PolicyDefined carried the name
        db.execute("ALTER TABLE policies ADD COLUMN name BLOB")


# Events after which a device may have lost rights: pushed to subscribers before the others.
_LOSSES = frozenset(
    {
        "DeviceSuspended",
        "DeviceRevoked",
        "DeviceDecommissioned",
        "TransferStarted",
        "FirmwareRecorded",
        "GatewayDeauthorized",
        "CloneAlert",
        "GatewayKeyRotated",
        "GatewayRemoved",
        "DeviceRekeyed",
    }
)
# Gateway events that void every grant of that gateway: its devices lose rights with it.
_GATEWAY_LOSSES = frozenset({"GatewayKeyRotated", "GatewayRemoved"})


# Events after which a clone alert no longer quarantines the device (as a gateway's local quarantine).
_OWNER_ACTIONS = frozenset(
    {"DeviceSuspended", "DeviceRevoked", "DeviceDecommissioned", "TransferStarted", "FirmwareRecorded"}
)


def onchain_gateway_id(gateway_id: bytes) -> bytes:
    """The protocol's gateway id (ASCII, up to 32 bytes) as the contracts' bytes32: zero-padded."""
    if not 0 < len(gateway_id) <= 32 or b"\0" in gateway_id:
        raise ValueError("gateway id must be 1..32 bytes without NUL")
    return gateway_id.ljust(32, b"\0")


class IndexError_(Exception):
    """The index database is unusable (the message says why)."""


class IndexStorageError(IndexError_):
    """A sync could not be written (disk full, I/O error). Nothing of it was kept: the watermark did not
    move, so the next sync fetches the same events again."""


class ChainSource(Protocol):
    """What the index needs of a chain; `LedgerSource` adapts a `Ledger`."""

    async def head(self) -> int: ...
    async def block_hash(self, number: int) -> bytes | None: ...
    async def events(self, from_block: int, to_block: int) -> Sequence[LedgerEvent]: ...


class LedgerSource:
    """A `ChainSource` over `ledger_bridge.Ledger` (any backend)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    async def head(self) -> int:
        return int(await self.ledger.block_number())

    async def block_hash(self, number: int) -> bytes | None:
        return await self.ledger.block_hash(number)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"LedgerSource({self.ledger!r})"

    async def events(self, from_block: int, to_block: int) -> Sequence[LedgerEvent]:
        return await self.ledger.events(from_block=from_block, to_block=to_block)  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class Grant:
    epoch: int
    key_commitment: bytes
    sealed_key: bytes

    def __repr__(self) -> str:  # sealed keys are not secret, but long and useless in logs
        return f"Grant(epoch={self.epoch}, commitment={self.key_commitment.hex()[:12]}...)"


@dataclass(frozen=True, kw_only=True)
class RekeyHost:
    """This gateway was named (startRekey) to carry the device's re-key at ``epoch``."""

    epoch: int
    sealed_password: bytes

    def __repr__(self) -> str:
        return f"RekeyHost(epoch={self.epoch})"


@dataclass(frozen=True, kw_only=True)
class DeviceView:
    """One device as the index sees it, with this gateway's grant if any."""

    device_id: bytes
    state: DeviceState
    epoch: int
    firmware_hash: bytes
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    grant: Grant | None
    clone_alert: bool = False  # a gateway reported a clone at this epoch; no owner action since
    rekey: RekeyHost | None = None  # this gateway carries the device's pending re-key (any epoch)

    @property
    def servable(self) -> bool:
        """Active, and this gateway holds a key for the current epoch."""
        return self.state is DeviceState.ACTIVE and self.grant is not None and self.grant.epoch == self.epoch

    @property
    def rekeying_here(self) -> bool:
        """The device's re-key is pending and its owner named this gateway at the current epoch (the
        contract's startRekey); claimed or active, not suspended. A confirmed re-key, a new transfer,
        revocation or any other epoch bump ends it."""
        return (
            self.rekey is not None
            and self.rekey.epoch == self.epoch
            and self.state in (DeviceState.CLAIMED, DeviceState.ACTIVE)
            and not self.servable
        )


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    from_block: int
    to_block: int
    events: int
    changed: tuple[bytes, ...]  # device ids, losses of rights first
    reorg_depth: int = 0


class SyncWindow:
    """How many blocks the next ``IdentityIndex.sync`` may cover. A sync that ran out of time is retried
    over an eighth of its range, and each one that completes lets the window grow back (doubling, up to
    `largest`): on a slow node, a busy machine or a long history with large batches, syncs still make
    progress, one committed batch at a time, instead of timing out on the same range for ever."""

    def __init__(self, largest: int = 5000) -> None:
        if largest < 1:
            raise ValueError("a sync window covers at least one block")
        self.largest = largest
        self.blocks = largest

    def __repr__(self) -> str:
        return f"SyncWindow({self.blocks} of {self.largest} blocks)"

    def timed_out(self) -> None:
        self.blocks = max(1, self.blocks // 8)

    def completed(self, report: SyncReport) -> bool:
        """Record a completed sync; -> True when it stopped at the window's end (more is waiting now)."""
        full = report.to_block - report.from_block + 1 >= self.blocks
        self.blocks = min(self.largest, self.blocks * 2)
        return full


class IdentityIndex:
    def __init__(
        self,
        path: Path,
        *,
        gateway_id: bytes | None = None,
        confirmations: int = 0,
        start_block: int = 0,
        clock: Callable[[], float] = time.time,
        defer_open: bool = False,
    ) -> None:
        """``clock``: wall-clock seconds (``last_sync_wall`` outlives a restart). Opens the database at
        once, unless ``defer_open``: then ``open()`` does (a gateway builds its parts touching no disk)."""
        self.path = path
        self.gateway_id = None if gateway_id is None else onchain_gateway_id(gateway_id)
        self.confirmations = confirmations
        self._start_block = start_block
        self._clock = clock
        self._subscribers: list[Callable[[SyncReport], Any]] = []
        self._conn: sqlite3.Connection | None = None
        self.last_sync_wall = 0.0
        if not defer_open:
            self.open()

    def open(self) -> None:
        """Open (and create) the index database; a no-op once open."""
        if self._conn is not None:
            return
        db = open_state_db(self.path, synchronous="NORMAL", schema=_SCHEMA, upgrade=_upgrade,
                           error=IndexError_, what="identity index")
        self._conn = db
        if self._meta("watermark") is None:
            self._set_meta("watermark", str(self._start_block - 1))
            self._set_meta("start_block", str(self._start_block))
        self.last_sync_wall = float(self._meta("last_sync_wall") or 0.0)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise IndexError_(f"identity index {self.path} is not open")
        return self._conn

    def __repr__(self) -> str:
        return f"IdentityIndex({self.path}, watermark={self.watermark})"

    # ---- reads (hot path) ----
    @property
    def watermark(self) -> int:
        return int(self._meta("watermark") or -1)

    def staleness(self) -> float:
        """Seconds since the index last completed a sync with the chain."""
        return self._clock() - self.last_sync_wall if self.last_sync_wall else float("inf")

    def device(self, device_id: bytes) -> DeviceView | None:
        row = self._db.execute(
            "SELECT d.state, d.epoch, d.firmware, p.publish, p.subscribe, g.epoch, g.commitment, g.sealed"
            " FROM devices d LEFT JOIN policies p ON p.id = d.policy"
            " LEFT JOIN grants g ON g.device = d.id AND g.gateway = ?"
            " WHERE d.id = ?",
            (self.gateway_id or b"", device_id),
        ).fetchone()
        if row is None:
            return None
        state, epoch, fw, pub, sub, g_epoch, commit, sealed = row
        grant = None if g_epoch is None else Grant(epoch=g_epoch, key_commitment=commit, sealed_key=sealed)
        rk = self._db.execute(
            "SELECT epoch, sealed FROM rekeys WHERE device = ? AND gateway = ?",
            (device_id, self.gateway_id or b""),
        ).fetchone()
        alert = self._db.execute(
            "SELECT 1 FROM clone_alerts WHERE device = ? AND epoch = ?", (device_id, epoch)
        ).fetchone()
        return DeviceView(
            clone_alert=alert is not None,
            device_id=device_id,
            state=DeviceState(state),
            epoch=epoch,
            firmware_hash=fw,
            publish=split_streams(pub or ""),
            subscribe=split_streams(sub or ""),
            grant=grant,
            rekey=None if rk is None else RekeyHost(epoch=rk[0], sealed_password=bytes(rk[1])),
        )

    def device_ids(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._db.execute("SELECT id FROM devices")]

    def servable_ids(self) -> list[bytes]:
        """Devices this gateway may serve now (Active, with a grant for the current epoch)."""
        return [
            bytes(r[0])
            for r in self._db.execute(
                "SELECT d.id FROM devices d JOIN grants g ON g.device = d.id AND g.gateway = ?"
                " WHERE d.state = ? AND g.epoch = d.epoch",
                (self.gateway_id or b"", int(DeviceState.ACTIVE)),
            )
        ]

    def rekey_ids(self) -> list[bytes]:
        """Devices whose pending re-key this gateway carries now (``DeviceView.rekeying_here``)."""
        rows = self._db.execute(
            "SELECT d.id FROM devices d JOIN rekeys r ON r.device = d.id AND r.gateway = ?"
            " WHERE r.epoch = d.epoch AND d.state IN (?, ?)",
            (self.gateway_id or b"", int(DeviceState.CLAIMED), int(DeviceState.ACTIVE)),
        )
        return [bytes(r[0]) for r in rows]

    def gateway(self, gateway_id: bytes) -> tuple[bytes, str, str] | None:
        row = self._db.execute(
            "SELECT x25519, account, operator FROM gateways WHERE id = ?", (gateway_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), row[1], row[2])

    def search(
        self,
        *,
        state: DeviceState | None = None,
        owner: str | None = None,
        gateway: bytes | None = None,
        prefix: str = "",
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of devices for lists: -> (total matching, rows ordered by id). ``prefix``: the start of
        the device id in hex; ``gateway``: the on-chain id of a gateway holding a key for the current
        epoch. Indexed reads only (state, owner, id range), for fleets of 100,000 and more."""
        if not 0 < limit <= 1000 or offset < 0:
            raise ValueError("limit must be 1..1000 and offset >= 0")
        where: list[str] = ["1"]
        params: list[object] = []
        if state is not None:
            where.append("d.state = ?")
            params.append(int(state))
        if owner:
            where.append("d.owner = ? COLLATE NOCASE")
            params.append(owner)
        if prefix:
            digits = prefix.lower().removeprefix("0x")
            if len(digits) > 16 or any(c not in "0123456789abcdef" for c in digits):
                raise ValueError("a device id prefix is up to 16 hex digits")
            low = bytes.fromhex(digits.ljust(16, "0"))
            high = bytes.fromhex(digits.ljust(16, "f"))
            where.append("d.id BETWEEN ? AND ?")
            params += [low, high]
        join = ""
        if gateway is not None:
            join = " JOIN grants g ON g.device = d.id AND g.gateway = ? AND g.epoch = d.epoch"
            params.insert(0, onchain_gateway_id(gateway.rstrip(b"\0")))
        clause = " AND ".join(where)
        count_sql = f"SELECT COUNT(*) FROM devices d{join} WHERE {clause}"  # noqa: S608 - fixed clauses, values bound
        total = int(self._db.execute(count_sql, params).fetchone()[0])
        page_sql = (
            "SELECT d.id, d.state, d.epoch, d.owner, d.manufacturer, d.policy, d.block,"  # noqa: S608 - values bound
            f" (SELECT p.name FROM policies p WHERE p.id = d.policy) FROM devices d{join}"
            f" WHERE {clause} ORDER BY d.id LIMIT ? OFFSET ?"
        )
        rows = self._db.execute(
            page_sql,
            [*params, limit, offset],
        ).fetchall()
        return total, [
            {
                "device_id": bytes(r[0]).hex(),
                "state": DeviceState(r[1]).label,
                "epoch": r[2],
                "owner": r[3],
                "manufacturer": r[4],
                "policy": None if r[5] is None else bytes(r[5]),
                "policy_name": _name(r[7]),
                "block": r[6],
            }
            for r in rows
        ]

    def device_row(self, device_id: bytes) -> dict[str, Any] | None:
        """One device for displays: its row and every gateway holding a key (two indexed reads)."""
        row = self._db.execute(
            "SELECT state, epoch, owner, manufacturer, policy, firmware, block,"
            " (SELECT p.name FROM policies p WHERE p.id = devices.policy) FROM devices WHERE id = ?",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        grants = self._db.execute(
            "SELECT gateway, epoch FROM grants WHERE device = ? ORDER BY gateway", (device_id,)
        ).fetchall()
        return {
            "device_id": device_id.hex(),
            "state": DeviceState(row[0]).label,
            "epoch": row[1],
            "owner": row[2],
            "manufacturer": row[3],
            "policy": None if row[4] is None else bytes(row[4]),
            "policy_name": _name(row[7]),
            "firmware_hash": "0x" + bytes(row[5]).hex(),
            "block": row[6],
            "gateways": [{"gateway": bytes(g), "epoch": e, "current": e == row[1]} for g, e in grants],
        }

    def counts_by_state(self) -> dict[str, int]:
        counts = dict(self._db.execute("SELECT state, COUNT(*) FROM devices GROUP BY state").fetchall())
        return {s.label: int(counts.get(int(s), 0)) for s in DeviceState if s is not DeviceState.UNREGISTERED}

    def gateways(self) -> list[tuple[bytes, bytes, str, str]]:
        """Every registered gateway: (id, x25519 public key, account, operator)."""
        return [
            (bytes(r[0]), bytes(r[1]), r[2], r[3])
            for r in self._db.execute("SELECT id, x25519, account, operator FROM gateways ORDER BY id")
        ]

    def owner_acted(self, device_id: bytes, since_block: int) -> bool:
        """Whether the device's owner acted on it (suspend, revoke, transfer, firmware) at or after
        ``since_block``: what lifts a gateway's clone quarantine."""
        marks = ",".join("?" * len(_OWNER_ACTIONS))
        row = self._db.execute(
            f"SELECT 1 FROM journal WHERE device = ? AND block >= ? AND name IN ({marks}) LIMIT 1",  # noqa: S608
            [device_id, since_block, *sorted(_OWNER_ACTIONS)],
        ).fetchone()
        return row is not None

    def journal(self, *, names: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
        """The latest events of the given names (e.g. clone alerts), newest first."""
        marks = ",".join("?" * len(names))
        rows = self._db.execute(
            f"SELECT block, name, device, gateway, args FROM journal WHERE name IN ({marks})"  # noqa: S608
            " ORDER BY block DESC, log_index DESC LIMIT ?",
            [*names, limit],
        ).fetchall()
        return [
            {"block": r[0], "event": r[1], "device": None if r[2] is None else bytes(r[2]).hex(),
             "gateway": None if r[3] is None else bytes(r[3]), "args": _load_args(r[4])}
            for r in rows
        ]

    def subscribe(self, callback: Callable[[SyncReport], Any]) -> None:
        """Call ``callback(report)`` after every sync that changed something."""
        self._subscribers.append(callback)

    # ---- sync ----
    async def sync(self, source: ChainSource, *, max_blocks: int = 5000) -> SyncReport:
        """Bring the index up to the chain head minus confirmations; -> what changed.

        Raises ``IndexStorageError`` when the database cannot be written; the index then stays as it
        was (each batch is one transaction) and a later sync catches up."""
        try:
            return await self._sync(source, max_blocks)
        except sqlite3.Error as exc:
            raise IndexStorageError(f"identity index {self.path}: {exc}") from None

    async def _sync(self, source: ChainSource, max_blocks: int) -> SyncReport:
        depth = await self._handle_reorg(source)
        head = await source.head()
        target = min(head - self.confirmations, self.watermark + max_blocks)
        start = self.watermark + 1
        if target < start:
            self._mark_synced()
            return SyncReport(from_block=start, to_block=start - 1, events=0, changed=(), reorg_depth=depth)
        events = await source.events(start, target)
        target_hash = await source.block_hash(target)
        changed = self._apply_batch(events, target, target_hash)
        report = SyncReport(
            from_block=start, to_block=target, events=len(events), changed=changed, reorg_depth=depth
        )
        self._mark_synced()
        if changed:
            for cb in list(self._subscribers):
                cb(report)
        return report

    def _mark_synced(self) -> None:
        self.last_sync_wall = self._clock()
        self._set_meta("last_sync_wall", repr(self.last_sync_wall))

    async def _handle_reorg(self, source: ChainSource) -> int:
        wm = self.watermark
        if wm < int(self._meta("start_block") or 0):
            return 0
        kept = self._db.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchall()
        for i, (number, stored) in enumerate(kept):
            if await source.block_hash(number) == bytes(stored):
                if i:
                    log.warning("reorg: blocks after %d replaced; rebuilding from the journal", number)
                    self._rollback_to(number)
                return i
        if kept:
            log.warning("reorg deeper than %d kept blocks: rebuilding the index", len(kept))
            self._rollback_to(int(self._meta("start_block") or 0) - 1)
            return len(kept)
        return 0

    def _rollback_to(self, ancestor: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            gone = db.execute(
                "SELECT device, gateway, policy FROM journal WHERE block > ?", (ancestor,)
            ).fetchall()
            db.execute("DELETE FROM journal WHERE block > ?", (ancestor,))
            db.execute("DELETE FROM blocks WHERE number > ?", (ancestor,))
            devices = {bytes(d) for d, _, _ in gone if d is not None}
            gateways = {bytes(g) for _, g, p in gone if g is not None and p is None}
            if db.execute(
                "SELECT 1 FROM journal WHERE name IN ('GatewayKeyRotated', 'GatewayRemoved') LIMIT 1"
            ).fetchone():  # these touch every grant of a gateway: rebuild everything rather than pick
                devices.update(bytes(d) for (d,) in db.execute("SELECT id FROM devices"))
                gateways.update(bytes(g) for (g,) in db.execute("SELECT id FROM gateways"))
                db.execute("DELETE FROM grants")
            policies = {bytes(p) for _, _, p in gone if p is not None}
            for d in devices:
                db.execute("DELETE FROM devices WHERE id = ?", (d,))
                db.execute("DELETE FROM grants WHERE device = ?", (d,))
                db.execute("DELETE FROM clone_alerts WHERE device = ?", (d,))
                db.execute("DELETE FROM rekeys WHERE device = ?", (d,))
            for g in gateways:
                db.execute("DELETE FROM gateways WHERE id = ?", (g,))
            for p in policies:
                db.execute("DELETE FROM policies WHERE id = ?", (p,))
            rows = db.execute("SELECT name, args, block FROM journal ORDER BY block, log_index").fetchall()
            for name, args, block in rows:
                a = _load_args(args)
                if _touches(name, a, devices, gateways, policies):
                    _apply(db, name, a, block)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (str(ancestor),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _apply_batch(
        self, events: Iterable[LedgerEvent], target: int, target_hash: bytes | None
    ) -> tuple[bytes, ...]:
        db = self._db
        losses: dict[bytes, None] = {}
        others: dict[bytes, None] = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for ev in events:
                args = dict(ev.args)
                device = _b(args.get("id"))
                gateway = _b(args.get("gatewayId"))
                policy = _b(args.get("policyId"))
                db.execute(
                    "INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ev.block_number, ev.log_index, ev.name, device, gateway, policy, _dump_args(args)),
                )
                if ev.name in _GATEWAY_LOSSES:
                    for (served,) in db.execute("SELECT device FROM grants WHERE gateway = ?", (gateway,)):
                        losses[bytes(served)] = None
                _apply(db, ev.name, args, ev.block_number)
                if device is not None:
                    (losses if ev.name in _LOSSES else others)[device] = None
            if target_hash is not None:
                db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (target, target_hash))
                db.execute("DELETE FROM blocks WHERE number < ?", (target - KEPT_BLOCK_HASHES,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (str(target),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return tuple(losses) + tuple(d for d in others if d not in losses)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _b(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


def _dump_args(args: Mapping[str, object]) -> str:
    return json.dumps(
        {k: ({"hex": bytes(v).hex()} if isinstance(v, (bytes, bytearray)) else v) for k, v in args.items()},
        sort_keys=True,
    )


def _name(value: bytes | None) -> str | None:
    """A policy's bytes32 name as text (its author's name for it), None when unknown or not text."""
    if value is None:
        return None
    raw = bytes(value).rstrip(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None


def _load_args(text: str) -> dict[str, Any]:
    return {k: (bytes.fromhex(v["hex"]) if isinstance(v, dict) else v) for k, v in json.loads(text).items()}


def _touches(
    name: str, a: Mapping[str, Any], devices: set[bytes], gateways: set[bytes], policies: set[bytes]
) -> bool:
    if name in ("GatewayRegistered", "GatewayAccountChanged") or name in _GATEWAY_LOSSES:
        return a["gatewayId"] in gateways
    if name == "PolicyDefined":
        return a["policyId"] in policies
    return a.get("id") in devices


def _apply(db: sqlite3.Connection, name: str, a: Mapping[str, Any], block: int) -> None:
    """Fold one event into the derived tables. Unknown events (the audit log's) change nothing here."""
    S = DeviceState
    d = a.get("id")
    if name in _OWNER_ACTIONS:  # the owner acted on the device: a clone alert no longer quarantines it
        db.execute("DELETE FROM clone_alerts WHERE device = ?", (d,))
    if name == "DeviceRegistered":
        db.execute(
            "INSERT OR REPLACE INTO devices VALUES (?, ?, 0, ?, NULL, NULL, ?, ?)",
            (d, int(S.MANUFACTURED), a["firmwareHash"], a["manufacturer"], block),
        )
    elif name == "DeviceClaimed":
        db.execute(
            "UPDATE devices SET state=?, owner=?, block=? WHERE id=?", (int(S.CLAIMED), a["owner"], block, d)
        )
    elif name == "DeviceActivated":
        db.execute("UPDATE devices SET state=?, block=? WHERE id=?", (int(S.ACTIVE), block, d))
    elif name == "DeviceSuspended":
        db.execute("UPDATE devices SET state=?, block=? WHERE id=?", (int(S.SUSPENDED), block, d))
    elif name == "TransferStarted":
        db.execute(
            "UPDATE devices SET state=?, epoch=?, block=? WHERE id=?",
            (int(S.TRANSFERRED), a["epoch"], block, d),
        )
    elif name == "TransferAccepted":
        db.execute(
            "UPDATE devices SET state=?, owner=?, block=? WHERE id=?",
            (int(S.CLAIMED), a["newOwner"], block, d),
        )
    elif name == "TransferCancelled":
        db.execute("UPDATE devices SET state=?, block=? WHERE id=?", (int(S.CLAIMED), block, d))
    elif name in ("DeviceRevoked", "DeviceDecommissioned"):
        state = S.REVOKED if name == "DeviceRevoked" else S.DECOMMISSIONED
        db.execute(
            "UPDATE devices SET state=?, epoch=?, block=? WHERE id=?", (int(state), a["epoch"], block, d)
        )
    elif name == "DeviceRekeyed":  # a new device secret: every grant of the old epoch is void
        db.execute("UPDATE devices SET epoch=?, block=? WHERE id=?", (a["epoch"], block, d))
        db.execute("DELETE FROM rekeys WHERE device = ?", (d,))
    elif name == "RekeyStarted":  # the gateway named to carry the re-key (the latest naming counts)
        db.execute(
            "INSERT OR REPLACE INTO rekeys VALUES (?, ?, ?, ?)",
            (d, a["gatewayId"], a["epoch"], a["sealedPassword"]),
        )
    elif name == "FirmwareRecorded":
        db.execute(
            "UPDATE devices SET firmware=?, epoch=?, block=? WHERE id=?",
            (a["firmwareHash"], a["epoch"], block, d),
        )
    elif name == "GatewayAuthorized":
        db.execute(
            "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?)",
            (d, a["gatewayId"], a["epoch"], a["keyCommitment"], a["sealedKey"]),
        )
    elif name == "GatewayDeauthorized":
        db.execute("DELETE FROM grants WHERE device=? AND gateway=?", (d, a["gatewayId"]))
        db.execute("UPDATE devices SET epoch=?, block=? WHERE id=?", (a["epoch"], block, d))
    elif name == "PolicyDefined":
        db.execute(
            "INSERT OR REPLACE INTO policies (id, publish, subscribe, author, name) VALUES (?, ?, ?, ?, ?)",
            (a["policyId"], a["publishStreams"], a["subscribeStreams"], a["author"], a.get("name")),
        )
    elif name == "PolicySet":
        db.execute("UPDATE devices SET policy=?, block=? WHERE id=?", (a["policyId"], block, d))
    elif name == "CloneAlert":  # AuthenticationLog: every gateway quarantines the device at this epoch
        db.execute("INSERT OR IGNORE INTO clone_alerts SELECT id, epoch FROM devices WHERE id = ?", (d,))
    elif name == "GatewayRegistered":
        db.execute(
            "INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?)",
            (a["gatewayId"], a["x25519PublicKey"], a["account"], a["operator"]),
        )
    elif name == "GatewayKeyRotated":  # grants sealed to the old key stop counting (the chain agrees)
        db.execute("DELETE FROM grants WHERE gateway = ?", (a["gatewayId"],))
        db.execute("UPDATE gateways SET x25519=? WHERE id=?", (a["x25519PublicKey"], a["gatewayId"]))
    elif name == "GatewayAccountChanged":
        db.execute("UPDATE gateways SET account=? WHERE id=?", (a["account"], a["gatewayId"]))
    elif name == "GatewayRemoved":
        db.execute("DELETE FROM grants WHERE gateway = ?", (a["gatewayId"],))
        db.execute("DELETE FROM gateways WHERE id = ?", (a["gatewayId"],))
