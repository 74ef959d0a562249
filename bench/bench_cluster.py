"""A fleet on a 3-node RabbitMQ MQTT cluster, enforced through the gateway's HTTP endpoint: handshake
throughput against the cluster's plain request/response ceiling, revocation cut-off across nodes, node
fail-over, and the endpoint's decision rate on its own. One run, ~3-4 minutes (the cluster's start is
~1-2 min of it on 2 shared cores).

Setup: ``bench._site.build_site`` (anvil on loopback, 1,000 devices onboarded for gateway ``gw-a``; it
also starts a Mosquitto this benchmark does not use), a 3-node cluster (``firmware_sim.rabbitmq``) whose
nodes ask ``http://127.0.0.1:<port>/auth``, and the gateway daemon in its own process with
``enforcement.mode = "http"`` (its endpoint on that port, the cluster's management API to close
connections), connected to node 0. The load generator (this process) spreads its connections over the
three nodes round-robin. Everything is stopped in ``finally``.

``cluster_mqtt_rr_ceiling_per_s``: plain request/response through the cluster with the same client,
concurrency (1,000 connections over the 3 nodes) and QoS 1 as the e2e run; the requesters and the
responder log in as RabbitMQ *internal* users (asked before the HTTP backend), so this ceiling carries
no authorization cost. ``cluster_e2e_handshakes_per_s``: 1,000 ``SimDevice``s over the 3 nodes, each
authenticating in a closed loop; every login and every new topic of every connection is decided by
the gateway's endpoint. The two alternate in ``ROUNDS`` windows (``bench_gateway``'s method);
``cluster_e2e_vs_ceiling_ratio`` is the median per-round ratio e2e / (ceiling / 2) (a handshake is two
round trips; target >= 0.5).

``cluster_revocation_cutoff_ms``: a device on node 2 (the gateway sits on node 0) is revoked on anvil;
time until the broker closed its connection (index poll 0.2 s, then ``DELETE
/api/connections/username/<id>`` on the management API); median of ``REVOKED``.

``cluster_node_failover_s``: the queue mirroring policy is set (``RabbitCluster.mirror_mqtt_queues``,
for QoS 1 subscription queues; the windows above run without it, since it copies every QoS 1
message), then node 2 is killed (SIGKILL) while the 1,000 devices are connected and authenticated;
its devices see their connection drop (they watch it from before the kill), reconnect to a surviving
node (alternately node 0 and node 1; a failed dial backs off 0.2 s doubling to 5 s, with jitter; CONNACK
and SUBACK are awaited ``FAILOVER_CONNECT_TIMEOUT_S``), re-authenticate and send one data message each;
time from the kill until the gateway has verified data from all of them. The devices subscribe at
``SUBSCRIBE_QOS`` (default 0: a transient queue per device that dies with its node; 1: a durable
queue, mirrored, as before). Where the time went: ``cluster_failover_*`` (drop seen, connected and
authenticated per device as seconds since the kill, each connect's own duration, failed dials, back-off
slept, the surviving nodes' and the gateway's CPU per device moved).

``cluster_device_connects_per_s``: the 1,000 devices connecting (``CONNECT_BATCH`` at a time): login
decided by the endpoint, two subscriptions, a queue each. ``cluster_broker_cpu_ms_per_connect``,
``cluster_gw_cpu_ms_per_connect``: the CPU (all nodes; the gateway) per device connection, a cost that
does not depend on what else runs on the machine (the rate does); ``cluster_authz_questions_per_connect``
the endpoint's decisions per connection. ``cluster_kib_per_device_connection``: the
cluster's memory growth (management API ``mem_used``, all nodes) per connected device.
``cluster_authz_questions_per_handshake``: the endpoint's decisions (the gateway's ``authz_*``
counters) per completed handshake over the e2e windows: the broker's cost of asking. RabbitMQ caches
only 12 allowed topics per connection and the gateway publishes on one ``down`` topic per device, so
with gateway accounts asked of the endpoint nearly every reply costs a question; as internal users the
broker decides them itself.

``authz_decisions_per_s``: the endpoint alone (``gateway.broker.AuthzServer``, 10,000 devices in its
table) in its own process, so on at most one core. ``AUTHZ_LOAD_PROCESSES`` load processes, each with
blocking raw sockets: ``AUTHZ_CONNECTIONS`` keep-alive connections with ``AUTHZ_DEPTH`` pipelined
requests written at once on each, replies counted by their blank line (no parsing); a mix of questions
as RabbitMQ asks them (per login: user, vhost; per new topic: topic and resource).
``authz_cpu_us_per_decision`` is the endpoint's CPU per decision and ``authz_decisions_per_cpu_s`` its
inverse: what one core of endpoint CPU answers. What bounded the rate shows in the CPU shares:
``authz_server_cpu_share`` (the endpoint's CPU / wall time: ~1.0 means the endpoint itself was the
bound) and ``authz_loadgen_cpu_share`` / ``authz_loadgen_cpu_us_per_decision`` (the load processes'
own CPU, from ``time.process_time`` in each). On a shared machine a share well below 1.0 for both
means neither got a core: the rate is then the machine's, not the endpoint's.

``BENCH_CLUSTER_DEVICES`` (default 1,000) sizes the fleet; ``BENCH_CLUSTER_FAILOVER_ONLY=1`` skips the
endpoint alone, the windows and the revocations (the fail-over and the connection costs only, ~3 min);
``BENCH_CLUSTER_SUBSCRIBE_QOS`` (0 or 1) and ``BENCH_CLUSTER_FAILOVER_CONNECT_TIMEOUT_S`` (default 30)
compare the schemes; ``BENCH_CLUSTER_KEEP_DIR=<dir>`` keeps the nodes' data and logs there (each
survivor logs how long it took to delete the dead node's transient queues).

``BENCH_CLUSTER_GATEWAY_ACCOUNTS`` = ``broker`` (default: the gateway's accounts are RabbitMQ internal
users, ``enforcement.gateway_accounts = "broker"``) or ``endpoint`` (the broker asks the endpoint for
them too), to compare the two schemes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bench.bench_gateway as bench_gateway
from bench._gateway_proc import run_responder
from bench._site import GATEWAY_ID, build_site
from bench.bench_gateway import (
    BENCH_DEFENCE,
    PlainLoad,
    _ceiling_and_e2e,
    _cpu_seconds,
    _gather_in_batches,
)
from device_agent.core import events, topics
from firmware_sim.broker import free_port
from firmware_sim.device import SimDevice
from firmware_sim.rabbitmq import ADMIN, RabbitCluster
from gateway.mqtt import MqttClient, MqttError
from gateway.settings import EnforcementSettings, HttpSettings

N_DEVICES = int(os.environ.get("BENCH_CLUSTER_DEVICES", "1000"))
NODES = 3
REVOKED = 3
RR_USER, RR_GATEWAY = "gateway-rr", "rr"
REQUESTER_USER = "bench-requester"
AUTHZ_SECONDS = 4.0
# A closed loop of 1,000 devices on a cluster that manages ~100-150 round trips/s on the shared
# machine queues each handshake's two round trips behind 1,000 others (~15 s): with bench_gateway's 5 s
# a handshake would time out and start over, and the loop would measure its own timeouts (0-4
# handshakes/s seen), not the cluster; so would the gateway's proof timeout (bench/_site.py: 5 s). The
# plain requesters, the devices and the gateway's challenges all wait up to HANDSHAKE_PATIENCE_S here
# (``ClusterPlainLoad.reply_timeout``), and the windows are long enough for the pipeline to fill.
HANDSHAKE_PATIENCE_S = 60.0
AUTH_HTTP_TIMEOUT_MS = int(os.environ.get("BENCH_CLUSTER_AUTH_HTTP_TIMEOUT_MS", "10000"))
# the devices' down/command subscriptions: 0 (a transient queue per device; see SimDevice) or 1 (a
# durable queue per device, mirrored for the fail-over: the previous scheme, for comparison)
SUBSCRIBE_QOS = int(os.environ.get("BENCH_CLUSTER_SUBSCRIBE_QOS", "0"))
# How long a reconnecting device waits for CONNACK and SUBACK. A surviving node takes hundreds of
# reconnections at once and answers each late; a client that gives up at 10 s and dials again throws
# away the login the node was about to finish and queues a new one behind the rest (seen: waves of
# "no CONNACK within 10s" every ~10 s, 945 abandoned connections for 333 devices).
FAILOVER_CONNECT_TIMEOUT_S = float(os.environ.get("BENCH_CLUSTER_FAILOVER_CONNECT_TIMEOUT_S", "30"))
FAILOVER_FIRST_BACKOFF_S = float(os.environ.get("BENCH_CLUSTER_FIRST_BACKOFF_S", "0.2"))
# skip the throughput windows and the revocations (to study the fail-over alone)
FAILOVER_ONLY = os.environ.get("BENCH_CLUSTER_FAILOVER_ONLY", "") == "1"
FAILOVER_BOUND_S = 120.0  # the fail-over figure is NaN past this (cluster_failover_devices_back says how far)
ROUND_S = float(os.environ.get("BENCH_CLUSTER_ROUND_S", "3" if N_DEVICES <= 100 else "15"))
CONNECT_BATCH = int(os.environ.get("BENCH_CLUSTER_CONNECT_BATCH", "50"))  # connections opened at once
# "broker": the gateway's accounts are RabbitMQ internal users (the broker decides its topics itself);
# "endpoint": the broker asks the endpoint for them too (the previous scheme, for comparison)
GATEWAY_ACCOUNTS = os.environ.get("BENCH_CLUSTER_GATEWAY_ACCOUNTS", "broker")
AUTHZ_LOAD_PROCESSES = 2
AUTHZ_CONNECTIONS = 4  # per load process
AUTHZ_DEPTH = 64  # requests pipelined per connection


# -- processes --------------------------------------------------------------------------------------------


def run_cluster_gateway(settings: Any, broker_password: str, ready: Any, stop: Any) -> None:
    asyncio.run(_gateway_main(settings, broker_password, ready, stop))


async def _gateway_main(settings: Any, broker_password: str, ready: Any, stop: Any) -> None:
    from gateway.service import Gateway

    async with Gateway(settings, broker_password=broker_password) as gw:
        task = asyncio.create_task(gw.serve(ready=ready.set))
        await asyncio.to_thread(stop.wait)
        gw.stop()
        await asyncio.wait_for(task, 10)


def run_authz_server(port_box: Any, ready: Any, stop: Any, decisions: Any) -> None:
    asyncio.run(_authz_main(port_box, ready, stop, decisions))


async def _authz_main(port_box: Any, ready: Any, stop: Any, decisions: Any) -> None:
    from gateway.broker import AuthorizeGateway, BrokerSecret, Enroll, Grant, HttpEnforcer

    enforcer = HttpEnforcer(gateway_id="gw-a", closer=None, listen=("127.0.0.1", 0))
    enforcer.stage([AuthorizeGateway(gateway_id="gw-a", secret=BrokerSecret("g" * 22))])
    ids = [f"{i:016x}" for i in range(10_000)]
    enforcer.stage([Enroll(device_id=d, secret=BrokerSecret(f"secret-{d}")) for d in ids])
    enforcer.stage([Grant(device_id=d, streams=frozenset({"telemetry"})) for d in ids[::2]])
    async with enforcer:
        assert enforcer.server is not None
        port_box.value = enforcer.server.port
        ready.set()
        await asyncio.to_thread(stop.wait)
        decisions.value = enforcer.server.decisions


def _authz_requests() -> list[bytes]:
    """A login (user, vhost) and a new topic (topic, resource, topic) per device, as RabbitMQ asks them."""
    out = []
    for i in range(0, 10_000, 7):
        did = f"{i:016x}"
        forms = [
            ("user", f"username={did}&password=secret-{did}&client_id={did}&vhost=%2F"),
            ("vhost", f"username={did}&vhost=%2F&ip=127.0.0.1&client_id={did}"),
            (
                "topic",
                f"username={did}&vhost=%2F&resource=topic&name=amq.topic&permission=write"
                f"&routing_key=diams.v1.d.gw-a.{did}.telemetry&variable_map.client_id={did}",
            ),
            ("resource", f"username={did}&vhost=%2F&resource=exchange&name=amq.topic&permission=write"),
            (
                "topic",
                f"username={did}&vhost=%2F&resource=topic&name=amq.topic&permission=write"
                f"&routing_key=diams.v1.hs.gw-a.{did}.up&variable_map.client_id={did}",
            ),
        ]
        for q, body in forms:
            b = body.encode()
            out.append(
                b"POST /auth/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (q.encode(), len(b), b)
            )
    return out


def run_authz_load(
    port: int, seconds: float, connections: int, depth: int, started: Any, done: Any, cpu: Any
) -> None:
    """One load process: blocking raw sockets, ``depth`` pipelined requests written at once on each of
    ``connections`` keep-alive connections, replies counted by their blank line (no parsing): a few
    hundred ns of this process's CPU per request, so the endpoint is what bounds the rate."""
    requests = _authz_requests()
    batches = [b"".join(requests[i : i + depth]) for i in range(0, len(requests) - depth, depth)]
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started.set()
    total, i = 0, 0
    cpu0 = time.process_time()
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            for sock in socks:  # every connection has a batch in flight while the others are read
                sock.sendall(batches[i % len(batches)])
                i += 1
            for sock in socks:
                got, tail = 0, b""
                while got < depth:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise RuntimeError("the endpoint closed a load connection")
                    # a blank line split over two reads is counted once: keep the last 3 bytes
                    got += (tail + chunk).count(b"\r\n\r\n")
                    tail = chunk[-3:]
                total += depth
    finally:
        for sock in socks:
            sock.close()
    done.value = total
    cpu.value = time.process_time() - cpu0


def _proc(ctx: Any, target: Any, *args: Any) -> Any:
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


async def _authz_alone() -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    port_box, ready, stop = ctx.Value("i", 0), ctx.Event(), ctx.Event()
    decisions = ctx.Value("q", 0)
    server = _proc(ctx, run_authz_server, port_box, ready, stop, decisions)
    loads: list[Any] = []
    try:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the authz server did not start")
        dones, starts, cpus = [], [], []
        for _ in range(AUTHZ_LOAD_PROCESSES):
            started, done, load_cpu = ctx.Event(), ctx.Value("q", 0), ctx.Value("d", 0.0)
            args = (port_box.value, AUTHZ_SECONDS, AUTHZ_CONNECTIONS, AUTHZ_DEPTH, started, done, load_cpu)
            loads.append(_proc(ctx, run_authz_load, *args))
            dones.append(done)
            starts.append(started)
            cpus.append(load_cpu)
        for started in starts:
            if not await asyncio.to_thread(started.wait, 60):
                raise RuntimeError("the authz load did not start")
        cpu0, t0 = _cpu_seconds(server.pid), time.perf_counter()
        for p in loads:
            await asyncio.to_thread(p.join, AUTHZ_SECONDS + 30)
        elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(server.pid) - cpu0
    finally:
        stop.set()
        await asyncio.to_thread(server.join, 10)
        if server.is_alive():
            server.kill()
        for p in loads:
            if p.is_alive():
                p.kill()
    answered = sum(d.value for d in dones)
    load_cpu = sum(c.value for c in cpus)  # each load process's own CPU over its loop
    if any(p.exitcode != 0 for p in loads):
        raise RuntimeError("an authz load process failed")
    return {
        "authz_decisions_per_s": answered / elapsed,
        "authz_cpu_us_per_decision": cpu / max(1, answered) * 1e6,
        # what one core of endpoint CPU answers
        "authz_decisions_per_cpu_s": answered / max(1e-9, cpu),
        # ~1.0: the endpoint used a whole core, so it (not the load) bounded the rate
        "authz_server_cpu_share": cpu / elapsed,
        "authz_loadgen_cpu_share": load_cpu / elapsed,
        "authz_loadgen_cpu_us_per_decision": load_cpu / max(1, answered) * 1e6,
    }


# -- the cluster run -----------------------------------------------------------------------------------------


class PatientSimDevice(SimDevice):
    """A device of the closed loop that waits for its handshake as a plain requester waits for its
    reply (see ``HANDSHAKE_PATIENCE_S``)."""

    async def authenticate(self, *, timeout: float = 5.0) -> object:
        return await super().authenticate(timeout=max(timeout, HANDSHAKE_PATIENCE_S))


class ClusterPlainLoad(PlainLoad):
    """``bench_gateway``'s plain requesters, spread over the nodes, as one internal RabbitMQ user; they
    wait for a reply as long as the devices wait for a handshake (``HANDSHAKE_PATIENCE_S``)."""

    reply_timeout = HANDSHAKE_PATIENCE_S

    def __init__(self, site: Any, ports: list[int], password: str) -> None:
        super().__init__(site)
        self.ports, self.password = ports, password

    async def connect(self, ids: list[str]) -> None:
        async def one(k: int, user: str) -> tuple[MqttClient, str]:
            c = await MqttClient.connect(
                "127.0.0.1",
                self.ports[k % len(self.ports)],
                client_id=user,
                username=REQUESTER_USER,
                password=self.password,
                on_message=self._on_message,
                keepalive=120,
            )
            await c.subscribe([(topics.handshake_down(RR_GATEWAY, user), 1)], timeout=30)
            return c, user

        self.clients = await _paced_batches(lambda k: one(k, ids[k]), len(ids))


async def _connect_retrying(dev: SimDevice, attempts: int = 5) -> None:
    """Connect and subscribe; a busy cluster sometimes answers a SUBSCRIBE late: try again."""
    for attempt in range(attempts):
        try:
            await dev.connect(timeout=30)
            return
        except MqttError:
            await dev.close()
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def _paced_batches(make: Any, n: int, size: int = 0) -> list[Any]:
    """Connect in batches: each connection costs the cluster a login and a queue (slow on 2 cores)."""
    size = size or CONNECT_BATCH
    out: list[Any] = []
    for i in range(0, n, size):
        out += await asyncio.gather(*(make(k) for k in range(i, min(n, i + size))))
    return out


def _broker_cpu_seconds(cluster: RabbitCluster, nodes: list[int] | None = None) -> float:
    """CPU seconds used so far by the running nodes' processes (each node is its own process group:
    the Erlang VM and its helpers)."""
    groups = {
        n.process.pid
        for n in cluster.nodes
        if n.process is not None and n.running and (nodes is None or n.index in nodes)
    }
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _cluster_memory(cluster: RabbitCluster) -> float:
    """Bytes of memory the running nodes use (management API)."""
    return float(sum(n.get("mem_used", 0) for n in cluster.management("/nodes") if n.get("running")))


def _gateway_counters(port: int) -> dict[str, float]:
    """The gateway's counters from its /metrics, as {name: total over reasons}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("diams_") and "_total" in line:
            name = line.split("_total", 1)[0][len("diams_") :]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _internal_user(cluster: RabbitCluster, name: str, password: str) -> None:
    import base64
    import json
    import urllib.request

    for path, body in (
        (f"/users/{name}", {"password": password, "tags": ""}),
        (f"/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"}),
    ):
        auth = base64.b64encode(f"{ADMIN}:{cluster.admin_password}".encode()).decode()
        req = urllib.request.Request(
            f"{cluster.management_urls[0]}/api{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Authorization": f"Basic {auth}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10):
            pass


async def _revocations(site: Any, sims: list[SimDevice]) -> list[float]:
    out = []
    for dev in sims:
        assert dev.client is not None
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        await site.actors["owner"].revoke(dev.device_id)
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 10)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _failover(
    cluster: RabbitCluster, sims: list[SimDevice], listener_got: list[Any]
) -> tuple[float, int, int, dict[str, float]]:
    """Kill node 2; its devices reconnect to the other nodes (backing off with jitter, as firmware
    does: a tight retry loop of hundreds of clients is a storm the surviving nodes then serve first),
    re-authenticate and send one data message each. -> (seconds until the gateway verified data from
    all of them, or NaN if not within ``FAILOVER_BOUND_S``; devices on the node; devices back; where
    the time went: per-device phase times, attempts and back-off)."""
    victims = [s for s in sims if s.port == cluster.nodes[2].mqtt_port]
    survivors = [cluster.nodes[0].mqtt_port, cluster.nodes[1].mqtt_port]
    listener_got.clear()
    dropped: list[float] = []  # the device saw its connection drop
    connected: list[float] = []  # CONNACK and SUBACK on a surviving node
    authenticated: list[float] = []
    connect_s: list[float] = []  # each successful connect+subscribe's own duration
    failed_connect_s: list[float] = []
    backoff_s: list[float] = []  # per device, total time asleep between attempts
    attempts: list[int] = []
    failures: dict[str, int] = {}

    async def move(k: int, dev: SimDevice) -> None:
        assert dev.client is not None
        await asyncio.wait_for(asyncio.shield(dev.client.closed), 30)
        dropped.append(time.perf_counter() - t0)
        dev.port = survivors[k % 2]
        delay, slept, tries = FAILOVER_FIRST_BACKOFF_S, 0.0, 0
        try:
            while time.perf_counter() - t0 < FAILOVER_BOUND_S:
                tries += 1
                t_try = time.perf_counter()
                try:
                    await dev.connect(timeout=FAILOVER_CONNECT_TIMEOUT_S)
                except Exception as exc:
                    failed_connect_s.append(time.perf_counter() - t_try)
                    why = f"{type(exc).__name__}: {str(exc).replace(dev.hex, '<id>')[:70]}"
                    failures[why] = failures.get(why, 0) + 1
                    await dev.close()
                    pause = delay * random.uniform(0.5, 1.5)
                    slept += pause
                    await asyncio.sleep(pause)
                    delay = min(5.0, delay * 2)
                    continue
                connect_s.append(time.perf_counter() - t_try)
                connected.append(time.perf_counter() - t0)
                if isinstance(await dev.authenticate(timeout=10), events.Authenticated):
                    authenticated.append(time.perf_counter() - t0)
                    dev.send_data("telemetry", dev.hex.encode())
                    return
                failures["handshake not authenticated"] = failures.get("handshake not authenticated", 0) + 1
                await dev.close()
        finally:
            attempts.append(tries)
            backoff_s.append(slept)

    wanted = {d.hex.encode() for d in victims}

    def back() -> int:
        return len(wanted & {p for _, p in listener_got})

    # the devices watch their connections from before the kill: each reacts when its own drops (the
    # kill itself returns only once the node's processes are gone, ~1-2 s later)
    t0 = time.perf_counter()
    moving = asyncio.gather(*(move(k, d) for k, d in enumerate(victims)), return_exceptions=True)
    await asyncio.to_thread(cluster.kill_node, 2)
    killed = time.perf_counter() - t0
    await moving
    while time.perf_counter() - t0 < FAILOVER_BOUND_S and back() < len(wanted):
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - t0 if back() == len(wanted) else float("nan")

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    breakdown = {
        "cluster_failover_kill_s": killed,
        "cluster_failover_dropped_max_s": max(dropped, default=float("nan")),
        "cluster_failover_connected_p50_s": pct(connected, 0.5),
        "cluster_failover_connected_max_s": max(connected, default=float("nan")),
        "cluster_failover_authenticated_max_s": max(authenticated, default=float("nan")),
        "cluster_failover_connect_p50_ms": pct(connect_s, 0.5) * 1000,
        "cluster_failover_connect_p90_ms": pct(connect_s, 0.9) * 1000,
        "cluster_failover_failed_connects": float(len(failed_connect_s)),
        "cluster_failover_failed_connect_p50_ms": pct(failed_connect_s, 0.5) * 1000,
        "cluster_failover_attempts_max": float(max(attempts, default=0)),
        "cluster_failover_backoff_p50_s": pct(backoff_s, 0.5),
        "cluster_failover_backoff_max_s": max(backoff_s, default=float("nan")),
    }
    for why, n in sorted(failures.items(), key=lambda kv: -kv[1])[:5]:
        print(f"   fail-over failure x{n}: {why}", flush=True)
    return seconds, len(victims), back(), breakdown


def _phase(what: str, since: float) -> None:
    print(f"   {what} in {time.perf_counter() - since:.1f} s", flush=True)


async def _run() -> dict[str, float]:
    results: dict[str, float] = {}
    if not FAILOVER_ONLY:
        results.update(await _authz_alone())
        print(f"   endpoint alone: {results['authz_decisions_per_s']:,.0f} decisions/s", flush=True)
    shared_port = free_port()
    # mirrored queues (what lets a dead node's clients reconnect elsewhere on 3.10) copy every QoS 1
    # message: the throughput windows run without them, the fail-over after the policy is set
    # auth_http.request_timeout: a question the endpoint does not answer in time is a refusal, and a
    # refused publish closes the device's connection (RabbitMQ 3.10); on a loaded 2-core machine the
    # gateway's loop, busy with 1,000 handshakes, answered some later than 2 s, and every such refusal
    # became a reconnection (a login and a queue more). Answers come from memory: waiting is cheaper.
    keep = os.environ.get("BENCH_CLUSTER_KEEP_DIR", "")  # keep the nodes' logs there (else removed)
    cluster = RabbitCluster(
        nodes=NODES,
        directory=Path(keep) if keep else None,
        auth_url=f"http://127.0.0.1:{shared_port}/auth",
        mirror_queues=False,
        http_timeout_ms=AUTH_HTTP_TIMEOUT_MS,
    )
    t0 = time.perf_counter()
    started = asyncio.create_task(asyncio.to_thread(cluster.start))
    site = None
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    stops: list[Any] = []
    try:
        site = await build_site(n_devices=N_DEVICES + REVOKED, n_unknown=0)
        await started
        print(f"   cluster and site ready in {time.perf_counter() - t0:.0f} s", flush=True)
        ports = cluster.mqtt_ports
        rr_password = os.urandom(12).hex()
        _internal_user(cluster, RR_USER, rr_password)
        _internal_user(cluster, REQUESTER_USER, rr_password)
        secret_dir = Path(tempfile.mkdtemp(prefix="diams-bench-cluster-"))
        (secret_dir / "management").write_text(cluster.admin_password)
        os.chmod(secret_dir / "management", 0o600)
        spec = site.gateway_spec(defence=BENCH_DEFENCE, poll_interval=0.2)
        metrics_port = free_port()
        settings = dataclasses.replace(
            spec.settings,
            http=HttpSettings(port=metrics_port),
            broker=dataclasses.replace(spec.settings.broker, port=ports[0]),
            # a challenge waits for its proof as long as the device waits for its result (the site's
            # 5 s would refuse proofs that queued behind 1,000 others; see HANDSHAKE_PATIENCE_S)
            protocol=dataclasses.replace(spec.settings.protocol, proof_timeout=HANDSHAKE_PATIENCE_S),
            enforcement=EnforcementSettings(
                mode="http",
                http_port=shared_port,
                management_urls=",".join(cluster.management_urls),
                management_user=ADMIN,
                management_password_file=secret_dir / "management",
                gateway_accounts=GATEWAY_ACCOUNTS,
            ),
        )
        gw_ready, gw_stop = ctx.Event(), ctx.Event()
        stops.append(gw_stop)
        gw = _proc(ctx, run_cluster_gateway, settings, spec.broker_password, gw_ready, gw_stop)
        procs.append(gw)
        rr_ready, rr_stop = ctx.Event(), ctx.Event()
        stops.append(rr_stop)
        rr = _proc(ctx, run_responder, ports[1], RR_USER, rr_password, RR_GATEWAY, rr_ready, rr_stop)
        procs.append(rr)
        for event, what in ((gw_ready, "the gateway"), (rr_ready, "the responder")):
            if not await asyncio.to_thread(event.wait, 90):
                raise RuntimeError(f"{what} did not become ready")

        plain = ClusterPlainLoad(site, ports, rr_password)
        t_phase = time.perf_counter()
        await plain.connect([] if FAILOVER_ONLY else [f"e{i:015x}" for i in range(N_DEVICES)])
        _phase("plain requesters connected", t_phase)
        devices = site.devices[:N_DEVICES]
        sims: list[SimDevice] = [
            PatientSimDevice(
                d, gateway_id=GATEWAY_ID, host="127.0.0.1", port=ports[k % NODES], subscribe_qos=SUBSCRIBE_QOS
            )
            for k, d in enumerate(devices)
        ]
        memory_before = _cluster_memory(cluster)
        t_connect = time.perf_counter()
        cpu_before = _broker_cpu_seconds(cluster), _cpu_seconds(gw.pid)
        asked_before = await asyncio.to_thread(_gateway_counters, metrics_port)
        await _paced_batches(lambda k: _connect_retrying(sims[k]), len(sims))
        _phase("devices connected", t_connect)
        results["cluster_device_connects_per_s"] = len(sims) / (time.perf_counter() - t_connect)
        # what a connection costs, whatever else runs on the machine: the broker's CPU (all nodes)
        # and the gateway's (its endpoint answers the login and the subscriptions' questions)
        results["cluster_broker_cpu_ms_per_connect"] = (
            (_broker_cpu_seconds(cluster) - cpu_before[0]) / len(sims) * 1000
        )
        results["cluster_gw_cpu_ms_per_connect"] = (_cpu_seconds(gw.pid) - cpu_before[1]) / len(sims) * 1000
        asked = await asyncio.to_thread(_gateway_counters, metrics_port)
        results["cluster_authz_questions_per_connect"] = sum(
            v - asked_before.get(k, 0) for k, v in asked.items() if k.startswith("authz_")
        ) / len(sims)
        await asyncio.sleep(2.0)  # the management statistics lag a little
        results["cluster_kib_per_device_connection"] = (
            (_cluster_memory(cluster) - memory_before) / 1024 / len(sims)
        )
        if not FAILOVER_ONLY:
            pids = {"gw": gw.pid, "loadgen": os.getpid()}
            before = await asyncio.to_thread(_gateway_counters, metrics_port)
            # bench_gateway's windows, ROUND_S long here (its module setting, read when the windows run)
            saved_round_s, bench_gateway.ROUND_S = bench_gateway.ROUND_S, ROUND_S
            try:
                plain_pids = {"responder": rr.pid, "loadgen": os.getpid()}
                mixed = await _ceiling_and_e2e(plain, sims, plain_pids, pids)
            finally:
                bench_gateway.ROUND_S = saved_round_s
            after = await asyncio.to_thread(_gateway_counters, metrics_port)
            handshakes = after.get("authenticated", 0) - before.get("authenticated", 0)
            questions = sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("authz_"))
            results["cluster_authz_questions_per_handshake"] = questions / max(1, handshakes)
            rr_stop.set()
            await plain.close()
            results["cluster_mqtt_rr_ceiling_per_s"] = mixed["mqtt_rr_ceiling_per_s"]
            results["cluster_mqtt_rr_p50_ms"] = mixed["mqtt_rr_p50_ms"]
            results["cluster_e2e_handshakes_per_s"] = mixed["e2e_handshakes_per_s"]
            results["cluster_e2e_saturated_p50_ms"] = mixed["e2e_saturated_p50_ms"]
            results["cluster_e2e_rejected"] = mixed["e2e_rejected"]
            results["cluster_e2e_vs_ceiling_ratio"] = mixed["e2e_vs_half_ceiling"]
            results["cluster_gw_cpu_us_per_handshake"] = mixed.get("gw_cpu_us_per_handshake", float("nan"))

            # revocation: devices on node 2, the gateway on node 0
            extra = site.devices[N_DEVICES:]
            targets = [
                SimDevice(
                    d, gateway_id=GATEWAY_ID, host="127.0.0.1", port=ports[2], subscribe_qos=SUBSCRIBE_QOS
                )
                for d in extra
            ]
            for t in targets:
                await _connect_retrying(t)
                if not isinstance(await t.authenticate(timeout=10), events.Authenticated):
                    raise RuntimeError("a revocation target did not authenticate")
            cut = await _revocations(site, targets)
            results["cluster_revocation_cutoff_ms"] = statistics.median(cut)
            results["cluster_revocation_cutoff_max_ms"] = max(cut)

        else:
            rr_stop.set()
            await plain.close()
        # fail-over: every device authenticated, then node 2 dies
        t_phase = time.perf_counter()
        await _gather_in_batches([s.authenticate(timeout=10) for s in sims])
        _phase("fleet authenticated", t_phase)
        got: list[Any] = []
        listener = await MqttClient.connect(
            "127.0.0.1",
            ports[0],
            client_id="bench-listener",
            username=RR_USER,
            password=rr_password,
            on_message=lambda t, p: got.append((t, p)),
        )
        await listener.subscribe([(topics.every(topics.VERIFIED), 1)])
        await asyncio.to_thread(cluster.mirror_mqtt_queues)
        await asyncio.sleep(max(5.0, N_DEVICES / 100))  # mirrors of the existing (empty) queues start
        t_phase = time.perf_counter()
        cpu_before = _broker_cpu_seconds(cluster, [0, 1]), _cpu_seconds(gw.pid)
        seconds, moved, returned, breakdown = await _failover(cluster, sims, got)
        # the surviving nodes' and the gateway's CPU per device moved (reconnect, handshake, data)
        breakdown["cluster_failover_broker_cpu_ms_per_device"] = (
            (_broker_cpu_seconds(cluster, [0, 1]) - cpu_before[0]) / max(1, moved) * 1000
        )
        breakdown["cluster_failover_gw_cpu_ms_per_device"] = (
            (_cpu_seconds(gw.pid) - cpu_before[1]) / max(1, moved) * 1000
        )
        _phase(f"fail-over: {returned} of {moved} devices back", t_phase)
        results.update(breakdown)
        print("   " + ", ".join(f"{k[17:]}={v:.2f}" for k, v in breakdown.items()), flush=True)
        results["cluster_node_failover_s"] = seconds
        results["cluster_failover_devices"] = float(moved)
        results["cluster_failover_devices_back"] = float(returned)
        await listener.close()
        await asyncio.gather(*(s.close() for s in sims), return_exceptions=True)
    finally:
        for stop in stops:
            stop.set()
        for p in procs:
            await asyncio.to_thread(p.join, 15)
            if p.is_alive():
                p.kill()
        with contextlib.suppress(BaseException):
            await started
        await asyncio.to_thread(cluster.cleanup)
        if site is not None:
            await site.close()
    return results


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:40s} {value:12.2f}")
