"""What the console knows and does, independent of HTML or JSON: one `ConsoleService` per process.

Strategy: lists and counts come from the local identity index (`ledger_bridge.index`), which a
background task keeps in step with the chain, so no page or API call of a list touches the chain; a
device's detail page reads its history from the chain (one `eth_getLogs`). Writes go through
`ledger_bridge.operations` as the signed-in actor. Batch jobs (CSV uploads) run as tasks whose progress
and per-row errors the job page and `GET /api/jobs/{id}` report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import operations as ops
from ..audit_trail import anchor_records, records
from ..csv_import import read_rows, register_rows
from ..errors import LedgerError
from ..firmware import reseal
from ..index import IdentityIndex, LedgerSource
from ..ledger import Ledger
from ..merkle import inclusion_proof, leaf_hash, merkle_root, verify_inclusion
from ..model import DeviceState, Role

log = logging.getLogger("diams.console")

ALERT_EVENTS = ("clone_detected", "cut_off")


@dataclass(kw_only=True)
class Job:
    id: str
    kind: str
    owner: str  # the account that started it: only it sees the job
    step: str = "queued"
    done: int = 0
    total: int = 0
    finished: bool = False
    summary: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "step": self.step,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "summary": self.summary,
            "errors": self.errors,
        }


class ConsoleService:
    def __init__(
        self,
        *,
        ledger: Ledger,
        index: IdentityIndex,
        audit_logs: Sequence[Path] = (),
        sync_interval_s: float = 1.0,
    ) -> None:
        self.ledger = ledger
        self.index = index
        self.audit_logs = list(audit_logs)
        self.sync_interval_s = sync_interval_s
        self.jobs: dict[str, Job] = {}
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._audit_cache: dict[Path, tuple[tuple[float, int], list[dict[str, Any]]]] = {}

    def __repr__(self) -> str:
        return f"ConsoleService({self.ledger!r}, {self.index!r})"

    # ---- index upkeep ----
    async def sync(self) -> None:
        async with self._sync_lock:
            while True:
                report = await self.index.sync(LedgerSource(self.ledger))
                if report.to_block >= await self.ledger.block_number() - self.index.confirmations:
                    return

    async def start(self) -> None:
        await self.sync()
        self._task = asyncio.create_task(self._sync_forever(), name="console-index-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self.jobs.values()):
            job.finished = True

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            try:
                await self.sync()
            except LedgerError as exc:
                log.warning("index sync failed: %s", exc)

    # ---- who is signed in ----
    async def roles_of(self, address: str) -> frozenset[str]:
        roles = set()
        for role in (Role.ADMIN, Role.MANUFACTURER, Role.MAINTAINER, Role.OPERATOR):
            if await self.ledger.has_role(role, address):
                roles.add(role.name.lower())
        return frozenset(roles)

    # ---- reads ----
    def channel(self) -> dict[str, Any]:
        ch = self.ledger.channel
        return {
            "registry": ch.registry,
            "auth_log": ch.auth_log,
            "deployed_block": ch.deployed_block,
            "backend": self.ledger.backend_name,
            "index_block": self.index.watermark,
            "index_staleness_s": round(min(self.index.staleness(), 1e9), 3),
        }

    def devices(self, **filters: Any) -> dict[str, Any]:
        total, rows = self.index.search(**filters)
        for r in rows:
            r["policy"] = ops.policy_label(r.pop("policy_name"), r["policy"])
        return {"total": total, "offset": filters.get("offset", 0), "devices": rows}

    def device_summary(self, device_id: bytes) -> dict[str, Any] | None:
        """One device from the index (the hot path of `GET /api/devices/{id}`)."""
        row = self.index.device_row(device_id)
        if row is not None:
            row["policy"] = ops.policy_label(row.pop("policy_name"), row["policy"])
            for g in row["gateways"]:
                g["gateway"] = ops.id_text(g["gateway"])
        return row

    async def device_detail(self, device_id: bytes) -> dict[str, Any]:
        detail = await ops.device_detail(self.ledger, device_id)
        r = detail.record
        return {
            "device_id": device_id.hex(),
            "state": r.state.label,
            "epoch": r.epoch,
            "manufacturer": r.manufacturer,
            "owner": r.owner,
            "pending_owner": None if r.pending_owner == "0x" + "00" * 20 else r.pending_owner,
            "model": ops.id_text(r.model),
            "firmware_hash": "0x" + r.firmware_hash.hex(),
            "characteristics": "0x" + r.characteristics.hex(),
            "claim_hash": "0x" + r.claim_hash.hex(),
            "policy": detail.policy_name or None,
            "clone_alerts": detail.clone_alerts,
            # a re-key due after a transfer: the gateway named to carry it (None before one is named)
            "rekey": None if detail.rekey is None else {"carried_by": detail.rekey.carrier_name},
            "gateways": [
                {
                    "gateway": ops.id_text(g.gateway_id),
                    "epoch": g.epoch,
                    "current": g.current,
                    "removed": g.gateway_id in detail.removed_gateways,  # removeGateway: never counts again
                    "key_commitment": "0x" + g.key_commitment.hex(),
                }
                for g in detail.grants
            ],
            "timeline": [
                {"event": t.event, "block": t.block, "time": t.time, "tx": t.tx, "details": t.details}
                for t in detail.timeline
            ],
            "authentications": ops.authentications(self.audit_logs, device_id, limit=20),
        }

    def gateways(self) -> list[dict[str, Any]]:
        return [
            {
                "gateway": ops.id_text(gid),
                "gateway_id": "0x" + gid.hex(),
                "x25519_public_key": "0x" + pub.hex(),
                "account": account,
                "operator": operator,
                "devices": self.index.search(gateway=gid, limit=1)[0],
            }
            for gid, pub, account, operator in self.index.gateways()
        ]

    def removal_block(self, gateway_id: bytes) -> int | None:
        """The block of the gateway's ``GatewayRemoved`` in the index, None while it is not removed."""
        for e in self.index.journal(names=["GatewayRemoved"], limit=1000):
            if e["gateway"] == gateway_id:
                return int(e["block"])
        return None

    async def removed_gateways(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Gateways removed on this channel, latest first: the index keeps their ``GatewayRemoved`` (it
        drops the gateway itself), the chain says when, by whom, and what the removal means."""
        removed = []
        for e in self.index.journal(names=["GatewayRemoved"], limit=limit):
            info = await ops.gateway_info(self.ledger, "0x" + bytes(e["gateway"]).hex())
            r = info.removal
            removed.append(
                {
                    "gateway": info.name,
                    "gateway_id": "0x" + info.gateway_id.hex(),
                    "operator": info.operator,
                    "block": e["block"] if r is None else r.block,
                    "time": None if r is None else ops.utc(r.time),
                    "by": None if r is None else f"{r.by} ({r.by_role})",
                    "tx": None if r is None else r.tx,
                    "consequences": info.consequences,
                }
            )
        return removed

    def _audit_records(self, path: Path) -> list[dict[str, Any]]:
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_mtime, st.st_size)
        cached = self._audit_cache.get(path)
        if cached is None or cached[0] != key:
            cached = (key, list(records(path)))
            self._audit_cache[path] = cached
        return cached[1]

    def dashboard(self, *, minutes: int = 60, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        start = (int(now) // 60 - minutes + 1) * 60
        ok, failed = [0] * minutes, [0] * minutes
        alerts: list[dict[str, Any]] = []
        for path in self.audit_logs:
            for r in self._audit_records(path):
                ts = float(r.get("ts", 0))
                event = r.get("event")
                if ts >= start and event in ("authenticated", "rejected"):
                    (ok if event == "authenticated" else failed)[min(int(ts - start) // 60, minutes - 1)] += 1
                if event in ALERT_EVENTS or (
                    event == "rejected" and r.get("reason") in ("locked", "lockout")
                ):
                    alerts.append(
                        {
                            "time": ts,
                            "event": event,
                            "device": r.get("device"),
                            "source": path.name,
                            "reason": r.get("reason"),
                        }
                    )
        for e in self.index.journal(names=("CloneAlert",), limit=20):
            alerts.append(
                {
                    "time": None,
                    "block": e["block"],
                    "event": "CloneAlert (chain)",
                    "device": e["device"],
                    "source": ops.id_text(e["gateway"]) if e["gateway"] else "chain",
                    "reason": None,
                }
            )
        alerts.sort(key=lambda a: (a.get("time") or 0, a.get("block") or 0), reverse=True)
        return {
            "states": self.index.counts_by_state(),
            "authentications": {"start": start, "bucket_s": 60, "ok": ok, "failed": failed},
            "alerts": alerts[:20],
        }

    def anchors(self) -> list[dict[str, Any]]:
        return [{**a, "log": path.name} for path in self.audit_logs for a in anchor_records(path)]

    async def check_inclusion(self, log_name: str, seq: int) -> dict[str, Any]:
        """Is audit record `seq` of `log_name` included under a Merkle root anchored on chain?"""
        path = next((p for p in self.audit_logs if p.name == log_name), None)
        if path is None:
            raise ValueError(f"no audit log named {log_name}")
        anchor = next(
            (a for a in anchor_records(path) if int(a["first_seq"]) <= seq <= int(a["last_seq"])), None
        )
        if anchor is None:
            raise ValueError(f"record {seq} of {log_name} is not in an anchored batch yet")
        first, last = int(anchor["first_seq"]), int(anchor["last_seq"])
        batch = [r for r in self._audit_records(path) if first <= int(r["seq"]) <= last]
        leaves = [leaf_hash(bytes.fromhex(r["hash"])) for r in batch]
        index = next((i for i, r in enumerate(batch) if int(r["seq"]) == seq), None)
        if index is None:
            raise ValueError(f"record {seq} is missing from {log_name}")
        root = merkle_root(leaves)
        proof = inclusion_proof(leaves, index)
        record = {k: v for k, v in batch[index].items() if k != "prev"}
        result: dict[str, Any] = {
            "log": log_name,
            "seq": seq,
            "record": record,
            "root": "0x" + root.hex(),
            "proof": [{"left": left, "hash": "0x" + h.hex()} for left, h in proof],
            "proof_valid": verify_inclusion(leaves[index], proof, root),
        }
        try:
            anchored = await self.ledger.anchors_of_root(root)  # keyed by (gateway, root): any gateway's
            if not anchored:
                raise LedgerError("no gateway anchored this root")
            # another gateway may have copied the root first: take this log's own anchor (its sidecar's
            # transaction), else one over this batch's range, so a front-runner spoils no proof
            span = (len(batch), first, last)
            on_chain = min(
                anchored,
                key=lambda a: (
                    a.transaction_hash.lower() != str(anchor.get("tx", "")).lower(),
                    (a.count, a.first_seq, a.last_seq) != span,
                ),
            )
        except LedgerError as exc:
            result.update(on_chain=False, included=False, problem=f"root not anchored on chain ({exc})")
            return result
        same = (on_chain.count, on_chain.first_seq, on_chain.last_seq) == (len(batch), first, last)
        result.update(
            on_chain=True,
            gateway=ops.id_text(on_chain.gateway_id),
            block=on_chain.block_number,
            anchored_at=on_chain.timestamp,
            included=bool(same and result["proof_valid"]),
            problem="" if same else "the on-chain anchor covers another range",
        )
        return result

    # ---- jobs ----
    def start_job(self, kind: str, owner: str, work: Callable[[Job], Awaitable[None]]) -> Job:
        job = Job(id=secrets.token_hex(8), kind=kind, owner=owner)
        self.jobs[job.id] = job

        async def run() -> None:
            try:
                await work(job)
            except (LedgerError, ValueError, OSError) as exc:
                job.summary = f"failed: {exc}"
            finally:
                job.finished = True
                job.step = "finished"
                with contextlib.suppress(LedgerError):
                    await self.sync()

        asyncio.get_running_loop().create_task(run(), name=f"console-job-{job.id}")
        return job

    def register_csv_job(self, actor: Any, owner: str, text: str) -> Job:
        async def work(job: Job) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload.csv"
                path.write_text(text, "utf-8")
                good, bad = read_rows(path)
            job.total, job.step = len(good), "registering"

            def progress(done: int, total: int) -> None:
                job.done, job.total = done, total

            report = await register_rows(actor, good, progress=progress)
            errors = sorted(bad + report.errors, key=lambda e: e.line)
            job.errors = [{"line": e.line, "device_id": e.device_id, "reason": e.reason} for e in errors]
            job.summary = (
                f"registered {report.registered} devices in {report.transactions} transactions; "
                f"{len(errors)} rows failed"
            )

        return self.start_job("register", owner, work)

    def onboard_csv_job(
        self,
        actor: Any,
        owner: str,
        text: str,
        *,
        policy: str,
        gateways: Sequence[str],
        bundles: dict[str, bytes],
    ) -> Job:
        async def work(job: Job) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                base = Path(tmp)
                for name, data in bundles.items():
                    (base / Path(name).name).write_bytes(data)
                rows, bad = ops.read_onboard_csv(text, bundle_dir=base)

            def progress(step: str, done: int, total: int) -> None:
                job.step, job.done, job.total = step, done, total

            report = await ops.onboard_rows(
                self.ledger, actor, rows, policy=policy, gateways=gateways, progress=progress
            )
            errors = sorted([*bad, *report.errors], key=lambda e: e.line)
            job.errors = [{"line": e.line, "device_id": e.device_id, "reason": e.reason} for e in errors]
            job.summary = (
                f"onboarded {len(report.onboarded)} devices (policy {policy})"
                + (f", authorized {report.authorized} keys for {', '.join(gateways)}" if gateways else "")
                + f" in {report.transactions} transactions; {len(errors)} rows failed"
            )

        return self.start_job("onboard", owner, work)

    def reseal_job(
        self, actor: Any, owner: str, bundles: dict[str, bytes], *, gateways: Sequence[str]
    ) -> Job:
        """After a firmware update (or a deauthorization): new sealed keys for every stale grant of the
        devices whose owner bundles were given (``ledger_bridge.firmware.reseal``)."""

        async def work(job: Job) -> None:
            devices, errors = [], []
            for n, (name, data) in enumerate(sorted(bundles.items()), 1):
                try:
                    try:
                        raw = json.loads(data)
                    except ValueError:
                        raise ValueError(f"{name} is not a device owner bundle (not JSON)") from None
                    devices.append(ops.OwnerBundle.parse(raw, name=name).device())
                except ValueError as exc:  # the message names the file and a field, never a value
                    errors.append({"line": n, "device_id": "", "reason": str(exc)})
            job.errors = errors
            if not devices:
                job.summary = "nothing re-sealed: no valid owner bundle"
                return
            ids = [(await ops.live_gateway(self.ledger, g)).gateway_id for g in gateways] or None
            job.step, job.total = "reading", len(devices)

            def progress(step: str, done: int) -> None:
                job.step, job.done = step, done

            report = await reseal(self.ledger, actor, devices, gateways=ids, progress=progress)
            job.done = len(devices)
            job.summary = report.summary() + (f"; {len(errors)} bundles refused" if errors else "")

        return self.start_job("reseal", owner, work)


def parse_state(text: str | None) -> DeviceState | None:
    if not text:
        return None
    for s in DeviceState:
        if s.label.lower() == text.lower() and s is not DeviceState.UNREGISTERED:
            return s
    raise ValueError(f"unknown state {text!r}")


def parse_bundle(data: bytes) -> ops.OwnerBundle:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.owner.json"
        path.write_bytes(data)
        return ops.OwnerBundle.load(path)


def dumps(value: Any) -> str:
    return json.dumps(ops.jsonable(value))
