"""A private Mosquitto broker: one instance per use, for the demo, the simulator, tests and benchmarks.

Tests (``tests/broker/conftest.py`` has fixtures), bench and ``firmware_sim.site`` import it from here::

    from firmware_sim.broker import MosquittoBroker, mosquitto_binary

    with MosquittoBroker(extra_config=["allow_anonymous true"]) as broker:
        client.connect(broker.host, broker.port)

Each instance has its own directory (config, log, data dir), listens on 127.0.0.1 on a free port that
it keeps across ``restart()``, runs with ``set_tcp_nodelay true``, persistence off and a raised
``max_queued_messages`` (the default 1000 silently drops QoS 0 messages to a slow subscriber), and
``start()`` returns only once the port accepts connections. While it runs, ``pid_path`` holds its pid
(what a gateway's ``enforcement.pid_file`` points at, to send SIGHUP after rewriting its files).

Strategy for privileges: when started as root, mosquitto 2.0 drops to the user ``mosquitto`` (a
``user root`` line would keep root, with a warning). We keep that realistic behaviour: the instance's
directory is created 0770 and handed to the ``mosquitto`` group, and every file the broker must read
(password and ACL files written by an enforcer included) must be readable by that group; use
``broker.file_group`` for it. Pass ``run_as="root"`` to opt out.

Where the files live: the broker's user must be able to traverse every parent of the instance
directory. A checkout in root's home (0700) or in a ``mktemp -d`` directory (0700) is not reachable
by ``mosquitto``, and the broker fails at once ("Unable to open log file ... for writing"). Rather
than keep root for a process that parses unauthenticated network input (the reason mosquitto drops
privileges in the first place), an instance asked for such a directory keeps its files in a fresh
directory under the system's temporary directory (``/tmp`` is world-traversable), leaves a symlink
at the requested place while it runs, and on ``cleanup()`` copies its log and config back there and
removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ledger_bridge.anvil import free_port

__all__ = ["MosquittoBroker", "MosquittoError", "free_port", "mosquitto_binary", "running_broker"]


class MosquittoError(RuntimeError):
    """The broker did not start, died, or did not answer in time (the message quotes its log)."""


def mosquitto_binary() -> str | None:
    """The mosquitto executable, or None when it is not installed (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _broker_user() -> tuple[int, set[int]] | None:
    """(uid, gids) the broker runs as after dropping root, or None when it keeps our identity."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if "mosquitto" in g.gr_mem}
    return user.pw_uid, gids


def traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether the user (uid, gids) may traverse every existing directory from / down to ``path``."""
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue  # created later by us (and shared with the broker's group)
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid in gids:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def _reachable_temp_dir(uid: int, gids: set[int]) -> Path:
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):  # noqa: S108
        if Path(candidate).is_dir() and traversable_by(Path(candidate), uid, gids):
            return Path(candidate)
    raise MosquittoError("no temporary directory the broker's user (mosquitto) can traverse")


def _broker_group() -> str | None:
    """The group the broker runs as after dropping root, or None when it keeps our identity."""
    if os.geteuid() != 0:
        return None
    try:
        grp.getgrnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


class MosquittoBroker:
    """One private mosquitto process. Use as a context manager, or call ``start()``/``stop()``."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        max_queued_messages: int = 1_000_000,
        run_as: str | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise MosquittoError("mosquitto is not installed (scripts/bootstrap.sh installs it)")
        self.binary = found
        self.run_as = run_as
        self.file_group: str | None = None if run_as == "root" else _broker_group()
        user = None if run_as == "root" else _broker_user()
        self._own_directory = directory is None
        self.requested_directory: Path | None = None  # set when the files live elsewhere (see above)
        if directory is not None and user is not None:
            requested = Path(directory).absolute()
            if not traversable_by(requested.parent, *user):
                if requested.is_symlink() or (requested.exists() and any(requested.iterdir())):
                    raise MosquittoError(f"{requested} exists and the broker's user cannot reach it")
                self.requested_directory = requested
                self._own_directory = True
                directory = None
        if directory is None:
            base = None if user is None else _reachable_temp_dir(*user)
            directory = Path(tempfile.mkdtemp(prefix="diams-mosquitto-", dir=base))
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.requested_directory is not None:
            self.requested_directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.requested_directory.rmdir()  # an empty directory made for us
            self.requested_directory.symlink_to(self.directory, target_is_directory=True)
        self.port = port or free_port(self.host)
        self.extra_config = list(extra_config)
        self.max_queued_messages = max_queued_messages
        self.start_timeout = start_timeout
        self.conf_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.pid_path = self.directory / "mosquitto.pid"
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        self._listening = False  # SIGHUP only once it listens: before its handler is set, it kills
        self._share_with_broker(self.directory, 0o770)
        self._share_with_broker(self.data_dir, 0o770)

    # -- files ---------------------------------------------------------------------------------------

    def _share_with_broker(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if self.file_group is not None:
            shutil.chown(path, group=self.file_group)

    def write_file(self, name: str, text: str, mode: int = 0o640) -> Path:
        """Write a file the broker can read (in this instance's directory) and return its path."""
        path = self.directory / name
        path.write_text(text)
        self._share_with_broker(path, mode)
        return path

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "set_tcp_nodelay true",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 0",
        ]
        if self.run_as is not None:
            lines.append(f"user {self.run_as}")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- process -------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._process is None:
            raise MosquittoError("the broker is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MosquittoBroker:
        if self.running:
            return self
        self.write_file("mosquitto.conf", self.config_text(), mode=0o640)
        self._process = subprocess.Popen(  # noqa: S603 - our own binary path and config file
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid_path.write_text(f"{self._process.pid}\n")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                if self._process.stderr:
                    self._process.stderr.close()
                self._process = None
                raise MosquittoError(f"mosquitto exited at start: {err.strip()}\n{self.log_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                self._listening = True
                return self
            time.sleep(0.02)
        self.stop()
        raise MosquittoError(f"mosquitto did not listen on {self.port} within {self.start_timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        self._listening = False
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stderr:
            process.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port (clients see the broker vanish and come back)."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: the broker rereads its password and ACL files and re-checks connected clients.

        Refused (ProcessLookupError, an OSError an enforcer retries) while the broker is stopped or
        still starting: a SIGHUP that arrives before mosquitto has set its handler terminates it."""
        if not (self._listening and self.running):
            raise ProcessLookupError("the broker is not running (stopped, or still starting)")
        os.kill(self.pid, signal.SIGHUP)

    def wait_for_log(self, text: str, timeout: float = 5.0, *, occurrences: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < occurrences:
            if time.monotonic() > deadline:
                raise MosquittoError(f"{text!r} not seen in the broker log within {timeout} s")
            time.sleep(0.01)

    def cleanup(self) -> None:
        """Stop; remove the directory this instance made (logs and config copied back first when the
        files lived away from the requested directory)."""
        self.stop()
        if self.requested_directory is not None and self.requested_directory.is_symlink():
            self.requested_directory.unlink()
            self.requested_directory.mkdir(mode=0o700)
            for path in (self.log_path, self.conf_path):
                if path.exists():
                    shutil.copy2(path, self.requested_directory / path.name)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid={self._process.pid}" if self.running and self._process else "stopped"
        return f"MosquittoBroker({self.host}:{self.port}, {state}, dir={self.directory})"


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[MosquittoBroker]:
    """``with running_broker(extra_config=[...]) as broker:`` (same arguments as MosquittoBroker)."""
    broker = MosquittoBroker(**kwargs)  # type: ignore[arg-type]
    with broker:
        yield broker
