"""A private RabbitMQ MQTT cluster on loopback: N nodes, for tests, benchmarks, the simulator and the demo.

    from firmware_sim.rabbitmq import RabbitCluster

    with RabbitCluster(nodes=3, auth_url="http://127.0.0.1:8080/auth") as cluster:
        client.connect("127.0.0.1", cluster.nodes[1].mqtt_port)

Strategy: each node is a separate Erlang VM with its own name (``diams<tag>-<i>@localhost``), config
file, plugins file, data ("mnesia") and log directories, and its own distribution, AMQP, MQTT and
management ports, all on 127.0.0.1 (what ``/work/shared/FACTS.md`` measured: several nodes run on one
machine this way). Nodes boot in parallel (~20-30 s each on 2 cores), then nodes 2..N join node 1
(``stop_app``, ``join_cluster``, ``start_app``). The cluster gets its own ``epmd`` on a free port, bound
to loopback, which ``stop()`` kills with the nodes: nothing is left running.

Privileges: as root, Debian's scripts run RabbitMQ as user ``rabbitmq``; we do the same (Popen's
``user=``, ``HOME=/var/lib/rabbitmq`` so the server and ``rabbitmqctl`` share that Erlang cookie), and the
instance's directories are handed to that user. As another user everything runs as that user, with the
cookie in the instance directory.

Access control: ``auth_backends.1 = internal`` holds one administrator (random password, only for the
management API and for tests) and ``auth_backends.2 = http`` asks ``auth_url`` for everyone else (the
gateway's endpoint, ``gateway.broker.HttpAuthorizer``). The ``guest`` account is never created.
``auth_url`` may be a list with one URL per node (several gateways, one node each).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RabbitCluster", "RabbitError", "RabbitNode", "rabbitmq_available"]

SBIN = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_auth_backend_http", "rabbitmq_management")
ADMIN = "diams-admin"


class RabbitError(RuntimeError):
    """A node did not start, join or stop in time (the message quotes its log)."""


def rabbitmq_available() -> bool:
    """Is RabbitMQ (Debian's rabbitmq-server) installed?"""
    return (SBIN / "rabbitmq-server").exists() and (SBIN / "rabbitmqctl").exists()


def _free_ports(n: int, below: int = 50_000) -> list[int]:
    """``n`` distinct free ports; below 50,000 because Erlang's CLI tools add 10,000 to a node's
    distribution port for their own."""
    ports: list[int] = []
    holders = []
    try:
        while len(ports) < n:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port < below and port not in ports:
                ports.append(port)
                holders.append(sock)
            else:
                sock.close()
    finally:
        for sock in holders:
            sock.close()
    return ports


def _run_as_rabbitmq() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return False
    return True


@dataclass
class RabbitNode:
    index: int
    name: str
    directory: Path
    dist_port: int
    amqp_port: int
    mqtt_port: int
    management_port: int
    auth_url: str
    process: subprocess.Popen[bytes] | None = None

    host = "127.0.0.1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self, limit: int = 3000) -> str:
        texts = []
        for path in [*sorted((self.directory / "log").glob("*.log")), self.directory / "stdout.log"]:
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)[-limit:]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RabbitNode({self.name}, mqtt={self.mqtt_port}, {state})"


class RabbitCluster:
    """``nodes`` RabbitMQ nodes clustered on 127.0.0.1. Context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        auth_url: str | Sequence[str] = "",
        directory: Path | None = None,
        start_timeout: float = 120.0,
        http_timeout_ms: int = 2000,
        mirror_queues: bool = True,
    ) -> None:
        if not rabbitmq_available():
            raise RabbitError("rabbitmq-server is not installed (scripts/bootstrap.sh installs it)")
        if not 1 <= nodes <= 9:
            raise ValueError("a test cluster has 1 to 9 nodes")
        urls = [auth_url] * nodes if isinstance(auth_url, str) else list(auth_url)
        if len(urls) != nodes:
            raise ValueError("auth_url: one URL, or one per node")
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="diams-rabbitmq-"))
        self.start_timeout = start_timeout
        self.http_timeout_ms = http_timeout_ms
        self.mirror_queues = mirror_queues  # see mirror_mqtt_queues (costs a copy of every QoS 1 message)
        self.as_rabbitmq = _run_as_rabbitmq()
        self.admin_password = secrets.token_urlsafe(18)
        tag = secrets.token_hex(3)
        ports = _free_ports(4 * nodes + 3)
        self.epmd_port, ctl_min = ports[-3], ports[-2]
        self._ctl_ports = (ctl_min, ctl_min)
        self.nodes = [
            RabbitNode(
                index=i,
                name=f"diams{tag}-{i}@localhost",
                directory=self.directory / f"node{i}",
                dist_port=ports[4 * i],
                amqp_port=ports[4 * i + 1],
                mqtt_port=ports[4 * i + 2],
                management_port=ports[4 * i + 3],
                auth_url=urls[i].rstrip("/"),
            )
            for i in range(nodes)
        ]
        self.home = Path("/var/lib/rabbitmq") if self.as_rabbitmq else self.directory
        self._epmd: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RabbitCluster({len(self.nodes)} nodes, mqtt ports {[n.mqtt_port for n in self.nodes]})"

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    # -- files ---------------------------------------------------------------------------------------

    def _config(self, node: RabbitNode) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            "mqtt.tcp_listen_options.nodelay = true",
            "tcp_listen_options.nodelay = true",
            f"management.tcp.port = {node.management_port}",
            "management.tcp.ip = 127.0.0.1",
            f"default_user = {ADMIN}",
            f"default_pass = {self.admin_password}",
            "default_user_tags.administrator = true",
            "default_permissions.configure = .*",
            "default_permissions.read = .*",
            "default_permissions.write = .*",
            "auth_backends.1 = internal",
            "auth_backends.2 = http",
            "auth_http.http_method = post",
            f"auth_http.user_path = {node.auth_url}/user",
            f"auth_http.vhost_path = {node.auth_url}/vhost",
            f"auth_http.resource_path = {node.auth_url}/resource",
            f"auth_http.topic_path = {node.auth_url}/topic",
            f"auth_http.request_timeout = {self.http_timeout_ms}",
            f"auth_http.connection_timeout = {self.http_timeout_ms}",
            "cluster_partition_handling = pause_minority" if len(self.nodes) > 2 else "",
            # nodes after the first join it while they boot (no stop_app/join_cluster/start_app cycle)
            *(
                [
                    "cluster_formation.peer_discovery_backend = classic_config",
                    f"cluster_formation.classic_config.nodes.1 = {self.nodes[0].name}",
                    "cluster_formation.randomized_startup_delay_range.min = 0",
                    "cluster_formation.randomized_startup_delay_range.max = 1",
                ]
                if node.index > 0
                else []
            ),
            "log.console = false",
            "log.file.level = info",
            "vm_memory_high_watermark.absolute = 1GiB",  # ~1,000 MQTT clients a node in the benchmark
            "disk_free_limit.absolute = 50MB",
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def _env(self, node: RabbitNode) -> dict[str, str]:
        d = node.directory
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self._ctl_ports[0]),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self._ctl_ports[1] + 50),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        return env

    def _prepare(self, node: RabbitNode) -> None:
        d = node.directory
        for sub in (d, d / "mnesia", d / "log"):
            sub.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(self._config(node))
        (d / "advanced.config").write_text("[].\n")
        (d / "enabled_plugins").write_text("[" + ",".join(PLUGINS) + "].\n")
        (d / "rabbitmq-env.conf").write_text("")
        if self.as_rabbitmq:
            for path in [self.directory, *d.rglob("*"), d]:
                shutil.chown(path, user="rabbitmq", group="rabbitmq")
            os.chmod(self.directory, 0o750)  # noqa: S103 - the broker user must enter it

    def _popen(self, argv: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
        if self.as_rabbitmq:
            kw.update(user="rabbitmq", group="rabbitmq", extra_groups=[])
        return subprocess.Popen(argv, env=env, cwd=str(self.home), stdin=subprocess.DEVNULL, **kw)  # noqa: S603

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> args...``; -> its output (RabbitError when it fails)."""
        proc = self._popen(
            [str(SBIN / "rabbitmqctl"), "-n", node.name, "-q", *args],
            self._env(node),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            what = f"rabbitmqctl {' '.join(args)} on {node.name}"
            raise RabbitError(f"{what}: no answer in {timeout} s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {node.name} failed: {text.strip()[-800:]}")
        return text

    # -- lifecycle -----------------------------------------------------------------------------------

    def _start_epmd(self) -> None:
        bundled = sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
        epmd = shutil.which("epmd") or (bundled[-1] if bundled else None)
        if epmd is None:
            raise RabbitError("epmd (Erlang) not found")
        env = {"PATH": os.environ.get("PATH", ""), "ERL_EPMD_ADDRESS": "127.0.0.1", "HOME": str(self.home)}
        self._epmd = subprocess.Popen(  # noqa: S603
            [str(epmd), "-port", str(self.epmd_port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.epmd_port, 10.0, lambda: self._epmd is not None and self._epmd.poll() is None, "epmd")

    def start_node(self, node: RabbitNode) -> None:
        """Start one node (again, after ``kill_node``) and wait until its MQTT listener accepts."""
        if node.running:
            return
        self._prepare(node)
        out = open(node.directory / "stdout.log", "ab")
        try:
            node.process = self._popen(
                [str(SBIN / "rabbitmq-server")], self._env(node), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        try:
            _wait_port(node.mqtt_port, self.start_timeout, lambda: node.running, node.name)
        except RabbitError as exc:
            raise RabbitError(f"{exc}\n--- {node.name} log ---\n{node.log_text()}") from None

    def start(self) -> RabbitCluster:
        try:
            self._start_epmd()
            # the first node alone, then the others in parallel: each joins it as it boots
            self.start_node(self.nodes[0])
            if len(self.nodes) > 1:
                with ThreadPoolExecutor(len(self.nodes) - 1) as pool:
                    list(pool.map(self.start_node, self.nodes[1:]))
            self.wait_clustered()
            if len(self.nodes) > 1 and self.mirror_queues:
                self.mirror_mqtt_queues()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_clustered(self, timeout: float = 60.0) -> None:
        """Wait until every running node sees all running nodes as cluster members."""
        wanted = {n.name for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(RabbitError):
                seen = set(self.cluster_nodes())
                if seen >= wanted:
                    return
            time.sleep(0.5)
        raise RabbitError(f"cluster not formed in {timeout} s: {sorted(seen)} of {sorted(wanted)}")

    def kill_node(self, node: RabbitNode | int) -> None:
        """Kill a node at once (SIGKILL to its whole process group), as a crash would."""
        n = self.nodes[node] if isinstance(node, int) else node
        process, n.process = n.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        _wait_group_gone(process.pid, 10.0)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and the cluster's epmd; nothing is left running."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes:
            process, node.process = node.process, None
            if process is None:
                continue
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            # the Erlang VM leaves helpers (erl_child_setup, inet_gethost) in its group: end them too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            _wait_group_gone(process.pid, 10.0)
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(5)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait(5)

    def cleanup(self) -> None:
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- management API ------------------------------------------------------------------------------

    @property
    def management_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{n.management_port}" for n in self.nodes]

    def management(
        self,
        path: str,
        *,
        method: str = "GET",
        node: int | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Any:
        """Call the management API as the administrator on a running node; -> decoded JSON or None."""
        candidates = [self.nodes[node]] if node is not None else [n for n in self.nodes if n.running]
        last: Exception | None = None
        auth = base64.b64encode(f"{ADMIN}:{self.admin_password}".encode()).decode()
        for n in candidates:
            request = urllib.request.Request(
                f"http://127.0.0.1:{n.management_port}/api{path}",
                method=method,
                data=body,
                headers={"Authorization": f"Basic {auth}", "content-type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                    body = response.read()
                return json.loads(body) if body else None
            except (OSError, urllib.error.URLError) as exc:
                last = exc
        raise RabbitError(f"management API {method} {path}: {last}")

    def mirror_mqtt_queues(self, copies: int = 2) -> None:
        """Mirror each MQTT client's QoS 1 subscription queue on ``copies`` nodes (a policy).

        RabbitMQ 3.10's MQTT plugin keeps a client's QoS 1 subscriptions in a durable classic queue on
        the node it connected to, even with a clean session. When that node dies the queue's record
        stays, its home is down, and the client cannot reconnect on another node (declaring or
        deleting the queue fails). A mirror elsewhere is promoted instead, and the clean session
        then removes it as usual. QoS 0 subscriptions live in a transient queue (``...qos0``), which
        dies with its node and needs no mirror: the policy leaves them alone (devices on a cluster
        subscribe at QoS 0, ``SimDevice(subscribe_qos=0)``; GATEWAY.md section 4a).
        """
        body = json.dumps(
            {
                "pattern": "^mqtt-subscription-.*qos1$",
                "apply-to": "queues",
                "definition": {"ha-mode": "exactly", "ha-params": copies, "ha-sync-mode": "automatic"},
            }
        ).encode()
        self.management("/policies/%2F/diams-mqtt-mirrors", method="PUT", body=body)

    def cluster_nodes(self) -> list[str]:
        """Names of the nodes that the cluster reports running."""
        return [n["name"] for n in self.management("/nodes") if n.get("running")]


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process is left in the process group (the VM outlives its start script)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RabbitError(f"processes of group {pgid} still running after {timeout} s")


def _wait_port(port: int, timeout: float, alive: Any, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RabbitError(f"{what} exited before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RabbitError(f"{what} did not listen on {port} within {timeout} s")


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[RabbitCluster]:
    with RabbitCluster(**kwargs) as cluster:
        yield cluster
