"""A local anvil node (npm @foundry-rs/anvil, installed by scripts/bootstrap.sh) for tests, benchmarks
and demos: ``with AnvilNode() as node: RpcBackend(url=node.url)``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent / "node_modules" / "@foundry-rs"


class AnvilError(RuntimeError):
    """anvil is missing or did not start."""


def anvil_binary() -> Path | None:
    """The anvil executable shipped inside the npm package for this platform, or one on PATH."""
    if PACKAGE_DIR.is_dir():
        for candidate in sorted(PACKAGE_DIR.glob("anvil-*/bin/anvil")):
            if candidate.is_file():
                return candidate
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a runner to listen on (anvil here, Mosquitto in
    firmware_sim.broker, which imports it: the one definition lives in the lower package)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class AnvilNode:
    def __init__(
        self,
        *,
        port: int | None = None,
        gas_limit: int = 30_000_000,
        state_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        binary = anvil_binary()
        if binary is None:
            raise AnvilError("anvil not found: run scripts/bootstrap.sh (npm ci in ledger_bridge/)")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--silent",
            "--gas-limit",
            str(gas_limit),
            *extra_args,
        ]
        if state_file is not None:
            self.args += ["--state", str(state_file)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"AnvilNode({self.url})"

    def start(self, timeout: float = 15.0) -> AnvilNode:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                req = urllib.request.Request(  # noqa: S310 (a loopback http URL we built)
                    self.url,
                    data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=1):  # noqa: S310
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.stop()
                raise AnvilError(f"anvil did not start: {err}")
            time.sleep(0.05)

    def stop(self) -> str:
        """Stop the node; -> what it printed on stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
