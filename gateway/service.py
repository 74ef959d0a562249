"""The gateway daemon: ``async with Gateway(settings) as gw: await gw.serve()``.

Strategy: one asyncio process. Inbound MQTT messages are handled synchronously in the client's
callback (``traffic.Traffic``): defence checks, the sans-IO gateway role, and replies; the only
waits are group commits of OTP counters, which delay the challenge of their loop turn. Everything
slow runs in background tasks under one TaskGroup: MQTT (re)connection, the identity index sync
(which pushes ledger changes, losses of rights first, into the device table and the broker), expiry
sweeps, audit anchoring on chain, the HTTP health endpoints and the systemd watchdog.
The chain is never called on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence

from device_agent.systemd import sd_notify, watchdog_interval
from ledger_bridge import Ledger, Signer
from ledger_bridge.actor import ActorHandle
from ledger_bridge.errors import LedgerError
from ledger_bridge.heads import HeadWatcher
from ledger_bridge.index import IdentityIndex, IndexStorageError, LedgerSource, SyncReport, SyncWindow

from .audit import AuditLog, AuditUnavailable
from .broker import (
    AuthorizeApplication,
    AuthorizeGateway,
    BrokerEnforcer,
    BrokerError,
    BrokerSecret,
    Change,
    ConnectionLog,
    CutOff,
    Demote,
    EnrollRekey,
    Grant,
    HttpEnforcer,
    MosquittoEnforcer,
    RabbitManagement,
    Reloader,
    ReloadFailed,
    gateway_username,
    sighup_reloader,
)
from .counters import CounterStore, CounterStoreError
from .devices import DeviceTable
from .ledger_link import build_ledger
from .mqtt import MqttClient, MqttError
from .ops import HealthServer, Metrics
from .preflight import (
    load_key,
    load_ledger_signer,
    read_application_password,
    read_broker_password,
    read_secret_text,
)
from .settings import GatewaySettings
from .traffic import Traffic

log = logging.getLogger("diams.gateway")

RECONNECT_CAP_S = 2.0  # one client per gateway: no herd to spread, and every device waits for it


def reconnect_delay(attempt: int, uniform: Callable[[float, float], float]) -> float:
    """Seconds before the gateway's next broker dial after ``attempt`` failed ones: full jitter,
    growing from 0.2 s and capped at ``RECONNECT_CAP_S`` (the campaign saw a 10 s cap keep a whole
    fleet without its gateway for 6 s after the broker was back)."""
    return uniform(0.0, min(RECONNECT_CAP_S, 0.2 * 2 ** min(attempt, 6)))


class GatewayError(Exception):
    """The gateway cannot start or run (the message says why)."""


def command_reloader(argv: list[str], timeout: float = 10.0) -> Reloader:
    """A reloader running a command (``systemctl reload mosquitto`` when the broker is another user).

    The enforcer calls it from a worker thread, so the wait does not block the event loop."""

    def reload() -> None:
        try:
            # argv comes from the operator's configuration, never from the network
            subprocess.run(  # noqa: S603
                argv, check=True, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True
            )
        except subprocess.CalledProcessError as exc:
            why = exc.stderr.decode(errors="replace").strip()[:200]
            raise ReloadFailed(f"{argv[0]} exited {exc.returncode}: {why}") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReloadFailed(f"reload command {argv[0]} failed: {exc}") from None

    return reload


class Gateway:
    """Strategy: every part is built in ``__init__`` (the device table, Traffic, the broker enforcer, and
    the file-backed stores, which touch no disk until opened); ``__aenter__`` does the work that can fail
    or wait: it opens the state files, the ledger and the enforcer, syncs the index and enrols the
    devices at the broker; ``__aexit__`` closes all of it in reverse order."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        ledger: Ledger | None = None,
        actor: ActorHandle | None = None,
        enforcer: BrokerEnforcer | None = None,
        broker_password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``ledger``: an open ``ledger_bridge.Ledger`` (else built from settings); ``actor``: the
        gateway account's ActorHandle for anchors and clone alerts (else from the keystore).
        ``clock``: monotonic seconds for the hot path; ``wall_clock``: seconds since the epoch for what
        outlives a restart (the index's last sync, hence its staleness; audit timestamps).
        Reads the configured key, broker password and TLS files; opens nothing under ``state_dir``."""
        s = settings
        self.settings = settings
        self.metrics = Metrics()
        self._ledger = ledger
        self._actor = actor
        self._anchors_reconciled = False  # the chain's next anchor sequence was read once
        self._broker_password = broker_password if broker_password is not None else read_broker_password(s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random_bytes
        self._tls = settings.broker.tls_context()
        self._signer: Signer | None = None
        self._cut_failed: set[str] = set()  # revoked devices the broker still shows connected
        # cut off at the broker until their ban ends (``_lift_ban``): device -> its end, wall-clock seconds
        # as recorded in the counter store (a restart keeps the ban: ``_restore_bans``)
        self._banned: dict[bytes, float] = {}
        self._source: LedgerSource | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._new_head = asyncio.Event()
        self.mqtt: MqttClient | None = None
        self.mqtt_connected = asyncio.Event()
        self.head_watcher: HeadWatcher | None = None  # with ledger.ws_url: its ``connected`` is a signal
        self.ledger_ok = False
        self._window = SyncWindow()  # blocks per index sync: shrinks when a sync times out
        self.health: HealthServer | None = None
        self._enforcer = enforcer if enforcer is not None else self._build_configured_enforcer()
        if isinstance(self._enforcer, HttpEnforcer):
            self._enforcer.count_with(self.metrics.inc)
        if isinstance(self._enforcer, MosquittoEnforcer) and self._enforcer.on_unconfirmed is None:
            self._enforcer.on_unconfirmed = self.cut_off_unconfirmed
        # the parts: files under state_dir are opened by __aenter__
        self.counters = CounterStore(s.state_dir / "counters.sqlite", defer_open=True)
        self.audit = AuditLog(
            s.state_dir / "audit.log", fsync_interval=s.audit_fsync_interval, clock=wall_clock,
            defer_open=True,
        )
        self.index = IdentityIndex(
            s.state_dir / "index.sqlite",
            gateway_id=s.gateway_id_bytes,
            confirmations=s.ledger.confirmations,
            start_block=s.ledger.deployed_block,
            clock=wall_clock,
            defer_open=True,
        )
        self.devices = DeviceTable(
            gateway_id=s.gateway_id_bytes,
            index=self.index,
            counters=self.counters,
            private_key=load_key(s),
            protocol=s.protocol,
        )
        self.traffic = Traffic(
            settings=s,
            devices=self.devices,
            counters=self.counters,
            audit=self.audit,
            metrics=self.metrics,
            staleness=self.index.staleness,
            clock=clock,
            publish=self.publish,
            broker_changes=self.apply_broker_changes if self.per_device_rights else None,
            on_session=self._session_changed,
        )
        self.index.subscribe(self._on_ledger_changes)

    def __repr__(self) -> str:
        return f"Gateway({self.settings.gateway_id!r})"

    # ---- lifecycle ----
    async def __aenter__(self) -> Gateway:
        s = self.settings
        try:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            for part in (self.counters, self.audit, self.index):
                part.open()
                self._stack.callback(part.close)
            self._restore_bans()
            self._signer = load_ledger_signer(s) if self._actor is None else None
            if self._ledger is None:
                await self._open_ledger(at_start=True)
            else:
                self._attach_ledger(self._ledger)
            if self._enforcer is not None:
                await self._stack.enter_async_context(self._enforcer)
            await self._initial_sync()
            await self._enroll_everyone()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        sd_notify("STOPPING=1")
        if self.mqtt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.mqtt.close(), 2)
        await self._stack.aclose()

    def stop(self) -> None:
        self._stopping.set()

    def _serving(self) -> bool:
        """Should a background loop take another turn? Not once stopping, nor once its task was
        cancelled: on 3.11 a ``wait_for`` deeper down (the ledger's) can swallow the CancelledError
        when its future completes at the same moment, and the loop would outlive a crashed gateway."""
        task = asyncio.current_task()
        return not self._stopping.is_set() and not (task is not None and task.cancelling())

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop()`` or cancellation. ``ready`` is called once connected and subscribed."""
        s = self.settings
        if s.http.port or s.http.port == 0:
            self.health = HealthServer(s.http.host, s.http.port, self.metrics, self.readiness)
            await self.health.start()
            self._stack.push_async_callback(self.health.stop)
        self.metrics.gauge("sessions", lambda: len(self.traffic.sessions), "authenticated sessions")
        self.metrics.gauge(
            "pending_handshakes", lambda: self.devices.role.pending, "handshakes awaiting PROOF"
        )
        self.metrics.gauge("devices_servable", lambda: len(self.devices), "devices this gateway may serve")
        self.metrics.gauge(
            "devices_without_policy",
            lambda: len(self.devices.without_policy),
            "served devices with no access policy (their data is dropped)",
        )
        self.metrics.gauge("index_staleness_seconds", self.index.staleness, "since the last ledger sync")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self._mqtt_loop(ready))
                tg.create_task(self._sync_loop())
                if self.settings.ledger.ws_url:
                    self.head_watcher = HeadWatcher(s.ledger.ws_url, lambda _: self._new_head.set())
                    tg.create_task(self.head_watcher.run())
                tg.create_task(self._sweep_loop())
                tg.create_task(self._clone_loop())
                tg.create_task(self._ban_loop())
                tg.create_task(self._audit_sync_loop())
                tg.create_task(self._anchor_loop())
                tg.create_task(self._watchdog_loop())
                await self._stopping.wait()
                raise _Stop
        except* _Stop:
            pass

    def readiness(self) -> tuple[bool, str]:
        if not self.mqtt_connected.is_set():
            return False, "broker: not connected"
        staleness = self.index.staleness()
        if staleness > self.settings.offline.max_staleness:
            return (
                False,
                f"ledger: index {staleness:.0f}s stale (bound {self.settings.offline.max_staleness:.0f}s)",
            )
        return True, "ready" if self.ledger_ok else "ready (ledger unreachable: serving from the index)"

    # ---- builders ----
    def _build_ledger(self) -> Ledger:
        return build_ledger(self.settings.ledger)

    def _build_configured_enforcer(self) -> BrokerEnforcer | None:
        """The broker enforcer ``enforcement.mode`` names (none: the broker's accounts are managed
        elsewhere)."""
        mode = self.settings.enforcement.mode
        enforcer: BrokerEnforcer | None = None
        if mode == "mosquitto":
            enforcer = self._build_enforcer()
        elif mode == "http":
            enforcer = self._build_http_enforcer()
        return enforcer

    def _build_enforcer(self) -> MosquittoEnforcer:
        e = self.settings.enforcement
        assert e.password_file is not None and e.acl_file is not None
        if e.reload_command:
            reload = command_reloader(shlex.split(e.reload_command))
        elif e.pid_file is not None:
            reload = sighup_reloader(e.pid_file)
        else:
            raise GatewayError("enforcement.pid_file or reload_command is required to reload mosquitto")
        return MosquittoEnforcer(
            password_file=e.password_file,
            acl_file=e.acl_file,
            reload=reload,
            broker_address=(self.settings.broker.host, self.settings.broker.port),
            broker_tls=self._tls,
            rights=e.rights,  # type: ignore[arg-type]
            file_group=e.file_group,
            connection_log=None if e.broker_log is None else ConnectionLog(e.broker_log),
            on_unconfirmed=self.cut_off_unconfirmed,
        )

    def cut_off_unconfirmed(self, device_id: str, attempts: int, confirmed: bool) -> None:
        """The broker kept a removed device connected after the reload: an alert (audit, metric, log).
        ``confirmed``: the enforcer's kick (``attempts`` of them) ended the connection after all."""
        self.metrics.inc("cut_off_unconfirmed")
        if confirmed:
            self._cut_failed.discard(device_id)
        else:
            self._cut_failed.add(device_id)
            self.metrics.inc("cut_off_failed")
        self.audit.append("cut_off_unconfirmed", device=device_id, kicks=attempts, confirmed=confirmed)
        log.error(
            "ALERT: revoked device %s stayed connected at the broker after the reload; %s after %d kick(s)",
            device_id, "cut off" if confirmed else "STILL CONNECTED", attempts,
        )

    def _build_http_enforcer(self) -> HttpEnforcer:
        e = self.settings.enforcement
        closer = None
        if e.management_urls:
            assert e.management_password_file is not None
            closer = RabbitManagement(
                [u.strip() for u in e.management_urls.split(",") if u.strip()],
                username=e.management_user,
                password=read_secret_text("enforcement.management_password_file", e.management_password_file),
            )
        return HttpEnforcer(
            gateway_id=self.settings.gateway_id,
            closer=closer,
            listen=(e.http_host, e.http_port),
            peers=e.peers(),
            shared_listen=(e.http_host, e.http_shared_port) if e.http_shared_port else None,
            accounts=closer if e.gateway_accounts == "broker" else None,
        )

    # ---- sessions (enforcers that see them: data topics only while a session is live) ----
    def _session_changed(self, did: bytes, live: bool) -> None:
        """Traffic's hook, called in the loop turn that starts a session (before the reply that lets
        the device send data leaves) or ends one (data topics are refused at once; the live
        connection is closed in the background)."""
        enforcer = self._enforcer
        if not isinstance(enforcer, HttpEnforcer):
            return
        if live:
            served = self.devices.served.get(did)
            if served is not None:
                enforcer.stage([Grant(device_id=did.hex(), streams=served.publish)])
            return
        users = enforcer.stage([Demote(device_id=did.hex())])
        if users and self._tasks is not None:
            self._tasks.create_task(self._close_connections(enforcer, users))

    async def _close_connections(self, enforcer: HttpEnforcer, users: list[str]) -> None:
        try:
            await enforcer.close_connections(users)
        except ReloadFailed as exc:
            log.warning("%s", exc)
            self.metrics.inc("enforcement_errors")

    # ---- ledger ----
    async def _open_ledger(self, *, at_start: bool = False) -> bool:
        """Open the configured ledger; -> whether it is open. At start, a ledger that is down is no
        reason to stay down: the gateway serves from its index while that is within the staleness
        bound (``offline.max_staleness``), and ``_sync_loop`` keeps trying to open the ledger."""
        from ledger_bridge.errors import LedgerUnavailable

        try:
            async with asyncio.timeout(30):
                ledger = await self._stack.enter_async_context(self._build_ledger())
        except (LedgerUnavailable, TimeoutError) as exc:
            if not at_start:
                raise
            staleness, bound = self.index.staleness(), self.settings.offline.max_staleness
            if staleness > bound:
                raise GatewayError(
                    f"the ledger is unreachable ({exc or 'timeout'}) and the identity index is "
                    + ("empty" if staleness == float("inf") else f"{staleness:.0f} s old")
                    + f", beyond offline.max_staleness ({bound:.0f} s): cannot serve from it"
                ) from None
            log.warning(
                "ledger unreachable at start (%s); serving from the index (%.0f s old, bound %.0f s) "
                "and retrying the ledger",
                exc or "timeout", staleness, bound,
            )
            self._source = None
            return False
        self._attach_ledger(ledger)
        return True

    def _attach_ledger(self, ledger: Ledger) -> None:
        self._ledger = ledger
        if self._actor is None and self._signer is not None:
            self._actor = ledger.actor(self._signer)
        self._source = LedgerSource(ledger)

    async def _initial_sync(self) -> None:
        if self._source is None:
            self.devices.load_all()
            return
        try:
            async with asyncio.timeout(self.settings.ledger.sync_timeout):
                report = await self.index.sync(self._source, max_blocks=self._window.blocks)
            self._window.completed(report)
            self.ledger_ok = True
        except (LedgerError, TimeoutError) as exc:  # offline start: serve from the index as it is
            if isinstance(exc, TimeoutError):
                self._window.timed_out()
            log.warning(
                "ledger unavailable at start (%s: %s); serving %d devices from the index "
                "and catching up in the background",
                type(exc).__name__,
                exc or f"no sync within {self.settings.ledger.sync_timeout:.0f} s",
                len(self.index.servable_ids()),
            )
        self.devices.load_all()

    async def _enroll_everyone(self) -> None:
        if self._enforcer is None:
            return
        changes: list[Change] = []
        if self._broker_password is not None:
            changes.append(
                AuthorizeGateway(
                    gateway_id=self.settings.gateway_id,
                    secret=BrokerSecret(self._broker_password),
                    connections=self.settings.broker.accounts,
                )
            )
        for name, path in self.settings.enforcement.application_files().items():
            changes.append(AuthorizeApplication(name=name, secret=read_application_password(name, path)))
        for gid, path in self.settings.enforcement.peer_gateway_files().items():
            secret = read_application_password(gid, path, "peer_gateways")
            changes.append(
                AuthorizeGateway(gateway_id=gid, secret=secret, connections=self.settings.broker.accounts)
            )
        # a device banned before a restart stays off the broker (cut off, should the enforcer still have
        # it) until its ban ends: ``_ban_loop`` enrols it then
        changes += [CutOff(device_id=did.hex()) for did in self._banned]
        changes += [e for e in self.devices.enrollments() if bytes.fromhex(e.device_id) not in self._banned]
        await self._enforcer.apply(changes)

    def _on_ledger_changes(self, report: SyncReport) -> None:
        cut, enroll = self.devices.refresh(report.changed, since_block=report.from_block)
        # a banned device stays off the broker until its ban ends, whatever account the ledger now gives
        # it (a new epoch, a re-key window opened here): ``_lift_ban`` enrols what it is entitled to then
        enroll = [e for e in enroll if bytes.fromhex(e.device_id) not in self._banned]
        for did in cut:
            self.traffic.drop_session(did, "ledger")
            try:
                self.audit.append("cut_off", device=did.hex(), block=report.to_block)
            except AuditUnavailable as exc:  # the cut-off happens whether or not it can be recorded
                self.metrics.inc("audit_unavailable", "cut_off")
                log.error("audit record cut_off not written: %s", exc)
            self.metrics.inc("cut_off")
        if self._enforcer is not None and (cut or enroll) and self._tasks is not None:
            self._tasks.create_task(self._apply_changes(cut, enroll))

    @property
    def per_device_rights(self) -> bool:
        """The broker enforces authentication state too (Grant at authentication, Demote at its end)."""
        return isinstance(self._enforcer, MosquittoEnforcer) and self._enforcer.rights == "per_device"

    async def apply_broker_changes(self, changes: list[Change]) -> None:
        if self._enforcer is not None:
            await self._enforcer.apply(changes)

    def cut_off(self, device_ids: list[bytes], cause: str) -> None:
        """Cut devices off at the broker now (in the background); ``cause`` labels the confirmation."""
        if self._enforcer is not None and self._tasks is not None and device_ids:
            self._tasks.create_task(self._apply_changes(device_ids, [], cause))

    async def _apply_changes(
        self, cut: list[bytes], enroll: Sequence[Change], cause: str = "ledger"
    ) -> None:
        """``cause`` of the cut-offs: ``ledger`` (the device may no longer connect: revoked, suspended,
        no current grant, a new epoch), ``clone`` (quarantine) or ``ban`` (pre-authentication or data flood,
        lifted later).
        Their confirmations are counted apart (``cut_off_confirmed{reason}``): only ``ledger`` pairs with
        the ``cut_off`` counter."""
        assert self._enforcer is not None
        try:
            await self._enforcer.apply([*(CutOff(device_id=d.hex()) for d in cut), *enroll])
            if cut and getattr(self._enforcer, "connection_log", None) is not None:
                for did in cut:  # seen gone in the broker's log (a failure was alerted instead)
                    if did.hex() not in self._cut_failed:
                        self.metrics.inc("cut_off_confirmed", cause)
                        self.audit.append("cut_off_confirmed", device=did.hex(), reason=cause)
        except (BrokerError, OSError):
            log.exception("broker enforcement failed; retried at the next ledger change")
            self.metrics.inc("enforcement_errors")

    async def _sync_loop(self) -> None:
        interval = self.settings.ledger.poll_interval
        # asyncio.timeout, not wait_for, in this loop: on Python 3.11 wait_for can lose a cancellation
        # that coincides with its future's completion or its timeout (see ``_serving``).
        while self._serving():
            try:
                if self._source is None and not await self._open_ledger():
                    raise ConnectionError("ledger still unreachable")
                assert self._source is not None
                async with asyncio.timeout(self.settings.ledger.sync_timeout):
                    report = await self.index.sync(self._source, max_blocks=self._window.blocks)
                behind = self._window.completed(report)
                if not self.ledger_ok:
                    log.info("ledger reachable again; index at block %d", self.index.watermark)
                self.ledger_ok = True
                if behind:
                    continue  # catching up: the next batch at once
            except IndexStorageError as exc:
                # The disk is full or failing: nothing of this sync was kept, and the next one fetches
                # the same events again. Past offline.max_staleness, handshakes are refused (fail closed).
                self.metrics.inc("index_storage_errors")
                log.error("identity index not updated: %s; retrying", exc)
                await asyncio.sleep(min(5.0, interval * 10))
            except (LedgerError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    self._window.timed_out()  # a smaller range next time: progress, however slow
                    log.warning("ledger sync took over %.0f s; next over %d blocks",
                                self.settings.ledger.sync_timeout, self._window.blocks)
                if self.ledger_ok:
                    log.warning(
                        "ledger sync failed (%s: %s); serving from the index", type(exc).__name__, exc
                    )
                self.ledger_ok = False
                self.metrics.inc("ledger_sync_errors")
                await asyncio.sleep(min(5.0, interval * 10))
            # the next sync: at the next announced block (ledger.ws_url), or after the poll interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._new_head.wait()
            self._new_head.clear()

    async def _anchor_loop(self) -> None:
        while self._serving():
            await asyncio.sleep(self.settings.ledger.anchor_interval)
            try:
                await self.anchor_now()
            except OSError as exc:  # the log cannot be synced (disk full, I/O error): next interval
                log.error("audit anchor: %s; retried next interval", exc)
                self.metrics.inc("anchor_errors")

    async def anchor_now(self) -> str | None:
        """Anchor the audit records not yet on chain; -> transaction hash, or None."""
        from ledger_bridge.index import onchain_gateway_id

        if self._actor is None:
            return None
        if not self._anchors_reconciled and self._ledger is not None:
            # the sidecar may lack the record of an anchor that is on chain (a disk that was full, a
            # kill between the transaction and the write): the chain says where the next one starts
            try:
                chain_next = await self._ledger.next_anchor_seq(
                    onchain_gateway_id(self.settings.gateway_id_bytes)
                )
            except LedgerError as exc:
                log.warning("audit anchor: cannot read the chain's next sequence (%s); retried", exc)
                self.metrics.inc("anchor_errors")
                return None
            if chain_next > self.audit.anchored_seq + 1:
                log.warning(
                    "audit anchor: the chain has records up to %d anchored; going on from there",
                    chain_next - 1,
                )
                self.audit.anchored_through(chain_next - 1)
            self._anchors_reconciled = True
        anchor = self.audit.next_anchor()
        if anchor is None:
            return None
        try:
            tx = await self._actor.anchor(
                onchain_gateway_id(self.settings.gateway_id_bytes),
                merkle_root=anchor.root,
                count=anchor.count,
                first_seq=anchor.first_seq,
                last_seq=anchor.last_seq,
            )
        except LedgerError as exc:
            log.warning("audit anchor failed (%s: %s); retried next interval", type(exc).__name__, exc)
            self.metrics.inc("anchor_errors")
            return None
        try:
            self.audit.mark_anchored(anchor, tx.transaction_hash)
        except AuditUnavailable as exc:  # on chain all the same; the chain tells a restarted gateway
            log.error("%s", exc)
            self.metrics.inc("audit_unavailable", "anchor")
        self.metrics.inc("anchors")
        return str(tx.transaction_hash)

    async def _clone_loop(self) -> None:
        """Answer Traffic's clone alarms: cut the device off at the broker (when quarantining) and
        record the alert on chain."""
        while self._serving():
            alarm = await self.traffic.clones.get()
            if self.settings.defence.clone_quarantine:
                self.cut_off([alarm.device_id], "clone")
            await self.report_clone(alarm.device_id, alarm.counter)

    def _restore_bans(self) -> None:
        """The bans recorded before a restart that have not ended: the device stays off the broker (see
        ``_enroll_everyone``) and its refused messages do not ban it again; ``_ban_loop`` lifts each
        when it ends. Those that have ended meanwhile are dropped: the device is enrolled as anyone."""
        preauth = self.traffic.preauth
        for did, until in self.counters.bans(self._wall_clock()).items():
            self._banned[did] = until
            preauth.ban(did, self._clock(), self._ban_left(until))
        if self._banned:
            log.info("%d pre-authentication ban(s) still in force after the restart", len(self._banned))

    def _ban_left(self, until: float) -> float:
        """Seconds until a ban ends; never more than ``defence.preauth_ban`` (a wall clock set back while
        the gateway was down does not lengthen a ban)."""
        return max(0.0, min(until - self._wall_clock(), self.traffic.preauth.ban_seconds))

    async def _ban_loop(self) -> None:
        """Answer Traffic's pre-authentication bans: record the ban's end in the counter store (a restart
        keeps it), cut the device off at the broker now, and enrol it again once the ban ends (if it is
        still served: the ledger may have moved on meanwhile). The bans restored at start end likewise."""
        for did, until in list(self._banned.items()):
            self._lift_later(did, until)
        while self._serving():
            did = await self.traffic.bans.get()
            now = self._wall_clock()
            until = self._banned[did] = now + self.traffic.preauth.ban_seconds
            try:
                self.counters.set_ban(did, until, now=now, keep=self.traffic.preauth.max_tracked)
            except CounterStoreError as exc:  # the ban holds all the same, until a restart
                self.metrics.inc("ban_store_errors")
                log.error("device %s: ban not recorded (%s); a restart would end it", did.hex(), exc)
            self.traffic.drop_session(did, "preauth_flood")
            self.cut_off([did], "ban")
            self._lift_later(did, until)

    def _lift_later(self, did: bytes, until: float) -> None:
        if self._tasks is not None:
            self._tasks.create_task(self._lift_ban(did, until))

    async def _lift_ban(self, did: bytes, until: float) -> None:
        """End a ban at ``until`` (wall clock): enrol the account the device is entitled to now (the
        ledger may have moved on meanwhile: revoked, a new epoch, or a re-key window opened or closed
        here), if any, and forget the ban's record."""
        await asyncio.sleep(self._ban_left(until))
        if self._banned.get(did) != until:
            return  # banned again since: that ban's own end lifts it
        del self._banned[did]
        try:
            self.counters.lift_ban(did, until)
        except CounterStoreError as exc:  # an ended ban's record is dropped at the next start anyway
            self.metrics.inc("ban_store_errors")
            log.error("device %s: the ended ban's record not removed: %s", did.hex(), exc)
        account = self.devices.enrollment(did)
        if account is not None and self._enforcer is not None:
            await self._apply_changes([], [account])
            log.info(
                "device %s: pre-authentication ban over, enrolled at the broker again%s",
                did.hex(), " (re-key window)" if isinstance(account, EnrollRekey) else "",
            )
        self.metrics.inc("bans_lifted")

    async def report_clone(self, device_id: bytes, counter: int) -> None:
        if self._actor is None:
            return
        from ledger_bridge.index import onchain_gateway_id

        try:
            await self._actor.clone_alert(
                device_id, onchain_gateway_id(self.settings.gateway_id_bytes), counter=counter
            )
        except LedgerError as exc:
            log.warning("clone alert for %s not recorded on chain: %s", device_id.hex(), exc)
            self.metrics.inc("clone_alert_errors")

    # ---- MQTT ----
    async def _mqtt_loop(self, ready: Callable[[], None] | None) -> None:
        b = self.settings.broker
        username = b.username or gateway_username(self.settings.gateway_id)
        addresses = b.addresses()  # a cluster's nodes: the next one after a failure
        attempt = turn = 0
        while self._serving():
            host, port = addresses[turn % len(addresses)]
            try:
                client = await MqttClient.connect(
                    host,
                    port,
                    client_id=username,
                    username=username,
                    password=self._broker_password,
                    on_message=self.traffic.on_message,
                    keepalive=b.keepalive,
                    timeout=b.connect_timeout,
                    tls=self._tls,
                )
                await client.subscribe(self.traffic.subscriptions())
            except MqttError as exc:
                attempt += 1
                turn += 1
                delay = reconnect_delay(attempt, random.uniform)
                log.warning("broker: %s; retrying in %.1fs", exc, delay)
                self.metrics.inc("mqtt_connect_errors")
                await asyncio.sleep(delay)
                continue
            attempt = 0
            if not self._serving():
                # stopped or cancelled while connecting: on 3.11 the connect's wait_for can swallow the
                # CancelledError (see _serving), and waiting on a healthy connection would never end
                await client.close()
                break
            self.mqtt = client
            self.mqtt_connected.set()
            self.metrics.inc("mqtt_connects")
            log.info("broker connected as %s; serving %d devices", username, len(self.devices))
            if ready is not None:
                sd_notify("READY=1")
                ready()
                ready = None
            await asyncio.shield(client.closed)
            turn += 1
            self.mqtt_connected.clear()
            if not self._stopping.is_set():
                log.warning("broker connection lost; reconnecting")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        client = self.mqtt
        if client is None or not client.is_open:
            self.metrics.inc("publish_dropped", "disconnected")
            return False
        try:
            client.publish(topic, payload, qos=qos)
        except MqttError:
            self.metrics.inc("publish_dropped", "disconnected")
            return False
        return True

    # ---- housekeeping ----
    async def _sweep_loop(self) -> None:
        while self._serving():
            await asyncio.sleep(1.0)
            self.traffic.sweep(self._clock())

    async def _audit_sync_loop(self) -> None:
        """fsync the audit log every ``audit_fsync_interval`` on a worker thread (a disk flush takes
        milliseconds: the hot path must not wait for it)."""
        self.audit.deferred_sync = True
        try:
            while self._serving():
                await asyncio.sleep(self.settings.audit_fsync_interval)
                await asyncio.to_thread(self.audit.sync)
        finally:
            self.audit.deferred_sync = False

    async def _watchdog_loop(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while self._serving():
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(interval)


class _Stop(Exception):
    pass
