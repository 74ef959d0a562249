"""``MosquittoEnforcer``: access control with mosquitto's password_file + acl_file and SIGHUP.

Strategy: ``apply()`` validates a batch, updates an in-memory table and waits for the next
*publication*: a background task renders both files whole from a snapshot of the table, replaces them
atomically, signals the broker to reload (SIGHUP) and, when it knows the broker's address, proves the
reload happened by logging in with a one-time canary credential written into that very password file
(mosquitto loses a SIGHUP that arrives during a reload, and never says when a reload is done; see
``_canary``). A lost signal is sent again. Publications are spaced by at least ``min_reload_interval``
(1 s: a reload stalls all broker traffic), so every change made meanwhile is coalesced into one reload.
A batch that drops connections (CutOff, a credential change) only waits ``urgent_reload_interval``
(0.5 s) after the previous reload, which keeps a cut-off within 1 s of the call.

Two rights modes (``rights=``), because mosquitto's ``user`` blocks cost O(N^2) per reload:
- ``"patterns"`` (default, scales to 10,000+ devices): every enrolled device may publish its own
  handshake and data topics and receive its own handshake and command topics, by ``%u`` patterns.
  Grant and Demote need no reload; the broker guarantees isolation between devices (no device can
  publish or read another's topics), and the gateway enforces the rest: data are accepted only under a
  valid session MAC, for the streams of the device's policy, before being republished on the verified topics.
- ``"per_device"``: the broker also enforces the authentication state and the stream list (a ``user``
  block per GRANTED device). Exact, but reloads grow quadratically: use it below ~2,000 concurrently
  authenticated devices (measured: 1,000 blocks → 50-110 ms per reload, 10,000 → 0.5-0.8 s).

What the broker does on reload (mosquitto 2.0.11, measured in tests/broker/ and bench/):
- a client whose password line disappeared or changed is disconnected (socket closed, no DISCONNECT);
- an ACL-only change keeps the connection: later refused publishes are dropped silently (v5 QoS 1
  gets PUBACK 0x87) and the connection stays up; deliveries to subscriptions the ACL no longer allows
  stop. Subscribing outside the ACL is acknowledged but nothing is delivered.

Safety of the broker itself, checked rather than trusted:
- every reload proof also reads the running broker's version (``$SYS/broker/version``; from the
  broker's log when ``retain_available false`` leaves $SYS without it) and refuses a mosquitto known
  to be crashable, or bypassable, before authentication (``_version``): apply() raises
  ``UnsafeBroker`` and nothing more is enforced on it;
- with ``connection_log`` (mosquitto's log file), every publication that removed devices is
  *confirmed*: each removed device must be absent from the broker's connections (``_connections``).
  A device still connected is reported (``on_unconfirmed``: the gateway audits it and counts it) and
  kicked: the enforcer gives it a one-time credential, logs in with it (the broker closes the old
  connection of that client id), and removes it again, up to ``kick_attempts`` times.

The broker config must contain the lines from ``mosquitto_config_lines()``: ``use_username_as_clientid``
stops a device from kicking another by reusing its client id; ``max_packet_size`` stops a device from
disconnecting its gateway with a packet larger than the gateway's client accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from ._canary import CANARY_USERNAME, CanaryAnswer, canary_login, connect_packet, open_socket
from ._connections import ConnectionLog
from ._errors import ReloadFailed, UnknownDevice
from ._interface import (
    AuthorizeApplication,
    AuthorizeGateway,
    BrokerEnforcer,
    Change,
    CutOff,
    Demote,
    Enroll,
    EnrollRekey,
    Grant,
    RemoveApplication,
    RemoveGateway,
)
from ._mosquitto_files import (
    DeviceRecord,
    GatewayRecord,
    render_acl_file,
    render_password_file,
    write_atomically,
)
from ._secret import BrokerSecret, mosquitto_sha512_hash
from ._version import check_mosquitto_version

log = logging.getLogger(__name__)

Reloader = Callable[[], None]
RightsMode = Literal["patterns", "per_device"]
CanaryProbe = Callable[[str, int, str, float], CanaryAnswer]
# (device id, kick attempts so far, confirmed now): called on the event loop after each publication
UnconfirmedHandler = Callable[[str, int, bool], None]


# Largest MQTT packet the broker takes from any client. DIAMS messages are at most a DATA message
# (13 + 16,384 bytes) plus its topic; the gateway's own client refuses packets over 1 MiB by closing
# its connection, so without this limit one device could disconnect its gateway with a 2 MiB publish.
MAX_PACKET_SIZE = 65_536
MAX_QUEUED_BYTES = 64 * 1024 * 1024


def mosquitto_config_lines(
    password_file: Path,
    acl_file: Path,
    *,
    max_packet_size: int = MAX_PACKET_SIZE,
    retain_available: bool = True,
) -> list[str]:
    """The mosquitto.conf lines this enforcer relies on (``max_packet_size``: see MAX_PACKET_SIZE).

    ``retain_available=False`` (what production and the demo use) makes the broker disconnect any
    client that publishes a retained message, so no device can park data in the broker's memory
    (mosquitto's ACL file cannot refuse retain per account; no DIAMS client ever retains). The broker
    then keeps no retained ``$SYS/broker/version`` either: give the enforcer the broker's log
    (``connection_log``), where it reads the version instead.
    """
    for path in (password_file, acl_file):
        if any(c.isspace() for c in str(path)):
            raise ValueError(f"mosquitto.conf cannot hold a path with whitespace: {str(path)!r}")
    return [
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "use_username_as_clientid true",
        "set_tcp_nodelay true",
        f"max_packet_size {int(max_packet_size)}",
        # bounded memory per client: QoS 1 messages queued for a slow or absent subscriber
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        *([] if retain_available else ["retain_available false"]),
    ]


def sighup_reloader(pid: int | Path | Callable[[], int]) -> Reloader:
    """A reloader sending SIGHUP to a pid, to the pid in a pid file, or to what a callable returns.

    The sender must be allowed to signal the broker (same user, or root). Under systemd, with the broker
    and the gateway as different users, use a reloader that runs ``systemctl reload mosquitto`` instead.
    """

    def resolve() -> int:
        if isinstance(pid, int):
            return pid
        if isinstance(pid, Path):
            return int(pid.read_text().strip())
        return pid()

    def reload() -> None:
        os.kill(resolve(), signal.SIGHUP)

    return reload


class MosquittoEnforcer(BrokerEnforcer):
    """Use as ``async with MosquittoEnforcer(...) as enforcer:`` (the reload task lives inside).

    ``broker_address`` (host, port) enables the reload proof; without it a publication ends when the
    signal is sent, and a signal lost during a slow reload goes unnoticed until the next publication.
    """

    def __init__(
        self,
        *,
        password_file: Path,
        acl_file: Path,
        reload: Reloader,
        broker_address: tuple[str, int] | None = None,
        rights: RightsMode = "patterns",
        min_reload_interval: float = 1.0,
        urgent_reload_interval: float = 0.5,
        reload_timeout: float = 5.0,
        file_mode: int = 0o640,
        file_group: str | None = None,
        durable_files: bool = False,
        connection_log: ConnectionLog | None = None,
        on_unconfirmed: UnconfirmedHandler | None = None,
        confirm_timeout: float = 1.0,
        kick_attempts: int = 3,
        canary_probe: CanaryProbe | None = None,
        broker_tls: ssl.SSLContext | None = None,
    ) -> None:
        if min_reload_interval < 0 or urgent_reload_interval < 0:
            raise ValueError("reload intervals must be >= 0")
        if urgent_reload_interval > min_reload_interval:
            raise ValueError("urgent_reload_interval must not exceed min_reload_interval")
        if reload_timeout <= 0:
            raise ValueError("reload_timeout must be > 0")
        if rights not in ("patterns", "per_device"):
            raise ValueError("rights must be 'patterns' or 'per_device'")
        if file_mode & 0o007:
            raise ValueError("the access files must not be accessible to other users (file_mode & 0o007)")
        self.password_file = Path(password_file)
        self.acl_file = Path(acl_file)
        self.rights: RightsMode = rights
        self._reload = reload
        self._broker_address = broker_address
        self.min_reload_interval = min_reload_interval
        self.urgent_reload_interval = urgent_reload_interval
        self.reload_timeout = reload_timeout
        self._file_mode = file_mode
        self._file_group = file_group
        self._durable = durable_files
        self._devices: dict[str, DeviceRecord] = {}
        self._gateways: dict[str, GatewayRecord] = {}
        self._applications: dict[str, str] = {}  # name -> password hash (read-only accounts)
        self._application_rows: list[tuple[str, str]] = []
        self._generation = 0  # bumped by every change that alters the files
        self._published = 0  # the generation the broker has been told to load
        self._urgent = False
        self._wakeup = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_reload = -float("inf")
        self.reload_count = 0
        self.signal_count = 0
        self.last_reload_seconds = 0.0  # signal → reload proven (or signal sent, without an address)
        self.broker_version: tuple[int, int, int] | None = None
        self.connection_log = connection_log
        self.on_unconfirmed = on_unconfirmed
        self.confirm_timeout = confirm_timeout
        self.kick_attempts = kick_attempts
        self.broker_tls = broker_tls  # the canary and kick logins speak TLS when the broker does
        self.canary_probe: CanaryProbe = canary_probe or functools.partial(canary_login, tls=broker_tls)
        self._removed: set[str] = set()  # devices removed since the last publication: to confirm
        self.confirmed_count = 0
        self.unconfirmed_count = 0
        self.kick_count = 0

    def __repr__(self) -> str:
        return (
            f"MosquittoEnforcer(password_file={str(self.password_file)!r}, acl_file={str(self.acl_file)!r}, "
            f"rights={self.rights!r}, devices={len(self._devices)}, gateways={len(self._gateways)})"
        )

    # -- state ---------------------------------------------------------------------------------------

    def stage(self, changes: Iterable[Change]) -> bool:
        """Apply ``changes`` to the table only (no files, no reload); all or nothing.

        Returns whether the broker's files must change. Use it with ``write_files()`` to load the
        initial state before the broker starts.
        """
        batch = list(changes)
        enrolled = set(self._devices)
        rekeying = {d for d, r in self._devices.items() if r.rekey_gateway is not None}
        for change in batch:  # validate against the state the batch will build, before mutating
            if isinstance(change, Enroll):
                enrolled.add(change.device_id)
                rekeying.discard(change.device_id)
            elif isinstance(change, EnrollRekey):
                enrolled.add(change.device_id)
                rekeying.add(change.device_id)
            elif isinstance(change, CutOff):
                enrolled.discard(change.device_id)
                rekeying.discard(change.device_id)
            elif isinstance(change, Grant) and change.device_id not in enrolled - rekeying:
                raise UnknownDevice(
                    f"cannot grant rights to device {change.device_id}: it is not enrolled for handshakes"
                )
            elif not isinstance(
                change,
                Demote | AuthorizeGateway | RemoveGateway | Grant | AuthorizeApplication | RemoveApplication,
            ):
                raise TypeError(f"not a broker change: {type(change).__name__}")
        urgent = dirty = False
        per_device = self.rights == "per_device"
        for change in batch:
            if isinstance(change, Enroll):
                urgent |= change.device_id in self._devices  # a new password drops the live session
                self._removed.discard(change.device_id)
                self._devices[change.device_id] = DeviceRecord(mosquitto_sha512_hash(change.secret), None)
                dirty = True
            elif isinstance(change, EnrollRekey):
                urgent |= change.device_id in self._devices  # its old credential and rights end now
                self._removed.discard(change.device_id)
                self._devices[change.device_id] = DeviceRecord(
                    mosquitto_sha512_hash(change.secret), None, change.gateway_id
                )
                dirty = True
            elif isinstance(change, Grant):
                old = self._devices[change.device_id]
                streams = tuple(sorted(change.streams))
                self._devices[change.device_id] = DeviceRecord(old.password_hash, streams)
                dirty |= per_device and old.streams != streams
            elif isinstance(change, Demote):
                old_or_none = self._devices.get(change.device_id)
                if old_or_none is not None and old_or_none.rekey_gateway is None:
                    self._devices[change.device_id] = DeviceRecord(old_or_none.password_hash, None)
                    dirty |= per_device and old_or_none.streams is not None
            elif isinstance(change, CutOff):
                gone = self._devices.pop(change.device_id, None) is not None
                if gone:
                    self._removed.add(change.device_id)
                urgent |= gone
                dirty |= gone
            elif isinstance(change, AuthorizeGateway):
                urgent |= change.gateway_id in self._gateways
                self._gateways[change.gateway_id] = GatewayRecord(
                    mosquitto_sha512_hash(change.secret), change.connections
                )
                dirty = True
            elif isinstance(change, AuthorizeApplication):
                urgent |= change.name in self._applications
                self._applications[change.name] = mosquitto_sha512_hash(change.secret)
                dirty = True
            elif isinstance(change, RemoveApplication):
                gone = self._applications.pop(change.name, None) is not None
                urgent |= gone
                dirty |= gone
            else:
                gone = self._gateways.pop(change.gateway_id, None) is not None
                urgent |= gone
                dirty |= gone
        if dirty:
            self._generation += 1
            self._urgent |= urgent
        return dirty

    def state_of(self, device_id: str) -> str:
        """``"absent"``, ``"rekeying"``, ``"enrolled"`` or ``"granted"`` (what the table says, live or
        pending)."""
        record = self._devices.get(device_id)
        if record is None:
            return "absent"
        if record.rekey_gateway is not None:
            return "rekeying"
        return "enrolled" if record.streams is None else "granted"

    def streams_of(self, device_id: str) -> frozenset[str]:
        """The streams granted to a device (empty unless GRANTED): the gateway checks data against it."""
        record = self._devices.get(device_id)
        return frozenset(record.streams or ()) if record is not None else frozenset()

    @property
    def device_count(self) -> int:
        return len(self._devices)

    def write_files(self) -> None:
        """Render and atomically replace both files from the current table, without a reload.

        For the initial state, before the broker starts: what is staged counts as published.
        """
        self._application_rows = sorted(self._applications.items())
        self._write(list(self._gateways.items()), list(self._devices.items()), canary=None)
        self._published = self._generation

    def _write(
        self,
        gateways: list[tuple[str, GatewayRecord]],
        devices: list[tuple[str, DeviceRecord]],
        canary: str | None,
    ) -> None:
        extra = [] if canary is None else [(CANARY_USERNAME, mosquitto_sha512_hash(BrokerSecret(canary)))]
        mode, group, durable = self._file_mode, self._file_group, self._durable
        # The ACL first, the password file last: the canary proves that the broker has read both.
        applications = self._application_rows
        per_device = self.rights == "per_device"
        names = [name for name, _ in applications]
        acl = render_acl_file(gateways, devices, per_device=per_device, applications=names)
        write_atomically(self.acl_file, acl, mode=mode, group=group, durable=durable)
        passwords = render_password_file(gateways, devices, extra, applications=applications)
        write_atomically(self.password_file, passwords, mode=mode, group=group, durable=durable)

    # -- publication ---------------------------------------------------------------------------------

    async def apply(self, changes: Iterable[Change]) -> None:
        self.stage(changes)
        await self.flush()

    async def flush(self) -> None:
        """Wait until everything staged so far is live at the broker."""
        if self._published >= self._generation:
            return
        if self._task is None:
            raise RuntimeError("MosquittoEnforcer must be used inside 'async with' to publish changes")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._generation, future))
        self._wakeup.set()
        await future

    async def __aenter__(self) -> MosquittoEnforcer:
        if self._task is None:
            self._task = asyncio.create_task(self._publisher(), name="mosquitto-enforcer")
        return self

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    async def _publisher(self) -> None:
        while True:
            await self._wakeup.wait()
            interval = self.urgent_reload_interval if self._urgent else self.min_reload_interval
            delay = self._last_reload + interval - time.monotonic()
            if delay > 0:
                # Sleep, but an urgent batch arriving meanwhile may shorten the wait: recompute then.
                self._wakeup.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that coincides
                # with its timeout, and this loop would then never end
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                self._wakeup.set()
                continue
            self._wakeup.clear()
            generation, self._urgent = self._generation, False
            gateways, devices = list(self._gateways.items()), list(self._devices.items())
            self._application_rows = sorted(self._applications.items())  # a snapshot for the writer thread
            removed, self._removed = self._removed, set()
            try:
                reports = await asyncio.to_thread(self._write_and_reload, gateways, devices, removed)
            except Exception as exc:  # waiters must never hang: every failure reaches them
                failure = exc if isinstance(exc, ReloadFailed) else ReloadFailed(
                    f"unexpected error while publishing access files: {type(exc).__name__}"
                )
                log.warning("broker access files not published: %s", failure)
                self._removed |= removed - set(self._devices)  # still to confirm at the next publication
                self._last_reload = time.monotonic()
                self._settle(generation, failure)
                continue
            self._last_reload = time.monotonic()
            self._published = generation
            self.reload_count += 1
            log.debug("broker reload %d: %d devices, %.1f ms", self.reload_count, len(devices),
                      self.last_reload_seconds * 1000)
            for device_id, attempts, confirmed in reports:
                if self.on_unconfirmed is not None:
                    self.on_unconfirmed(device_id, attempts, confirmed)
            self._settle(generation, None)
            if self._generation > self._published and self._waiters:
                self._wakeup.set()

    def _write_and_reload(
        self,
        gateways: list[tuple[str, GatewayRecord]],
        devices: list[tuple[str, DeviceRecord]],
        removed: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> list[tuple[str, int, bool]]:
        """Publish; -> (device, kick attempts, confirmed) for each removed device not gone at once."""
        self._publish_files(gateways, devices)
        if not removed or self.connection_log is None:
            return []
        reports = []
        for device_id in self._still_connected(removed):
            self.unconfirmed_count += 1
            confirmed = False
            attempts = 0
            while not confirmed and attempts < self.kick_attempts:
                attempts += 1
                log.error("revoked device %s is still connected after the reload; kicking it (attempt %d)",
                          device_id, attempts)
                self._kick(gateways, devices, device_id)
                confirmed = not self._still_connected({device_id})
            reports.append((device_id, attempts, confirmed))
        self.confirmed_count += len(removed) - sum(1 for r in reports if not r[2])
        return reports

    def _publish_files(
        self, gateways: list[tuple[str, GatewayRecord]], devices: list[tuple[str, DeviceRecord]]
    ) -> None:
        canary = secrets.token_urlsafe(18) if self._broker_address is not None else None
        try:
            self._write(gateways, devices, canary)
        except OSError as exc:
            raise ReloadFailed(f"could not write the broker access files: {exc.strerror or exc}") from exc
        started = time.monotonic()
        self._signal()
        if canary is not None:
            self._await_reload(canary, started)
        self.last_reload_seconds = time.monotonic() - started

    def _still_connected(self, device_ids: set[str]) -> list[str]:
        """The devices the broker's log still shows connected, after waiting ``confirm_timeout``."""
        assert self.connection_log is not None
        deadline = time.monotonic() + self.confirm_timeout
        while True:
            try:
                self.connection_log.poll()
            except OSError as exc:
                raise ReloadFailed(f"cannot read the broker log to confirm a cut-off: {exc}") from exc
            left = sorted(d for d in device_ids if self.connection_log.is_connected(d))
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.01)

    def _kick(
        self,
        gateways: list[tuple[str, GatewayRecord]],
        devices: list[tuple[str, DeviceRecord]],
        device_id: str,
    ) -> None:
        """End a connection the reload left up: log in as the device with a one-time credential (the
        broker closes the older connection of that client id), then remove the credential again."""
        self.kick_count += 1
        kick = secrets.token_urlsafe(18)
        with_kick = [*devices, (device_id, DeviceRecord(mosquitto_sha512_hash(BrokerSecret(kick)), None))]
        self._publish_files(gateways, with_kick)
        if self._broker_address is not None:
            host, port = self._broker_address
            try:
                with open_socket(host, port, self.reload_timeout, self.broker_tls) as sock:
                    sock.sendall(connect_packet(device_id, kick, client_id=device_id))
                    sock.recv(4)
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError as exc:
                log.warning("kick of %s failed: %s", device_id, exc)
        self._publish_files(gateways, devices)

    def _signal(self) -> None:
        try:
            self._reload()
        except (OSError, ValueError) as exc:
            raise ReloadFailed(f"could not make the broker reload: {exc}") from exc
        self.signal_count += 1

    def _await_reload(self, canary: str, started: float) -> None:
        assert self._broker_address is not None
        host, port = self._broker_address
        deadline = started + self.reload_timeout
        # A signal sent while the broker is still reloading is lost: send it again if the canary is
        # refused for longer than a reload takes (measured by the previous one, at least 0.25 s).
        resend_after = max(0.25, 3 * self.last_reload_seconds)
        signalled = started
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReloadFailed(
                    f"the broker did not load the new access files within {self.reload_timeout} s"
                )
            try:
                answer = self.canary_probe(host, port, canary, remaining)
                if answer.accepted:
                    self.broker_version = check_mosquitto_version(answer.version or self._logged_version())
                    return
            except OSError as exc:
                raise ReloadFailed(f"could not check the broker's reload at {host}:{port}: {exc}") from exc
            if time.monotonic() - signalled > resend_after:
                self._signal()
                signalled = time.monotonic()
            time.sleep(0.005)

    def _logged_version(self) -> str | None:
        """The version in the broker's log: with ``retain_available false`` $SYS keeps none."""
        if self.connection_log is None:
            return None
        try:
            self.connection_log.poll()
        except OSError as exc:
            raise ReloadFailed(f"cannot read the broker log for the broker's version: {exc}") from exc
        return self.connection_log.version

    def _settle(self, generation: int, error: ReloadFailed | None) -> None:
        remaining = []
        for wanted, future in self._waiters:
            if wanted > generation:
                remaining.append((wanted, future))
            elif not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(type(error)(str(error)))
        self._waiters = remaining
