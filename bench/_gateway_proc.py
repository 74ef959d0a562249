"""Processes of the gateway benchmark: the gateway daemon, the plain responder, and the flooder.

Each runs in its own process (``multiprocessing`` spawn), so the gateway's event loop competes with
the load generator only for the machine's cores, not for one interpreter. ``run_gateway`` can profile
the gateway with cProfile (``BENCH_GATEWAY_PROFILE=<file>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from typing import Any

from device_agent.core import topics
from gateway.mqtt import codec

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the gateway ---------------------------------------------------------------------------------------


def run_gateway(spec: Any, ready: Any, stop: Any) -> None:
    if spec.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(_gateway_main(spec, ready, stop))
        finally:
            profiler.disable()
            profiler.dump_stats(spec.profile)
    else:
        asyncio.run(_gateway_main(spec, ready, stop))


async def _gateway_main(spec: Any, ready: Any, stop: Any) -> None:
    from gateway.broker import ConnectionLog, MosquittoEnforcer
    from gateway.service import Gateway

    pid = spec.broker_pid
    enforcer = MosquittoEnforcer(
        password_file=spec.password_file,
        acl_file=spec.acl_file,
        reload=lambda: os.kill(pid, signal.SIGHUP),
        broker_address=(spec.settings.broker.host, spec.settings.broker.port),
        rights="patterns",
        file_group=spec.file_group,
        connection_log=ConnectionLog(spec.broker_log) if spec.broker_log is not None else None,
    )
    enforcer.stage(spec.extra_changes)
    async with Gateway(spec.settings, enforcer=enforcer, broker_password=spec.broker_password) as gw:
        task = asyncio.create_task(gw.serve(ready=ready.set))
        await asyncio.to_thread(stop.wait)
        gw.stop()
        await asyncio.wait_for(task, 10)


# -- the plain responder: echoes every request, no work ------------------------------------------------


def run_responder(port: int, username: str, password: str, gateway_id: str, ready: Any, stop: Any) -> None:
    asyncio.run(_responder_main(port, username, password, gateway_id, ready, stop))


async def _responder_main(
    port: int, username: str, password: str, gateway_id: str, ready: Any, stop: Any
) -> None:
    from gateway.mqtt import MqttClient

    client: Any = None

    def on_message(topic: bytes, payload: bytes) -> None:
        # the handshake's up topic -> its down topic, QoS 1 as the gateway answers
        parsed = topics.parse(topic)
        if parsed is not None:
            client.publish(topics.handshake_down(parsed[1], parsed[2]), payload, qos=1)

    client = await MqttClient.connect(
        "127.0.0.1", port, client_id=username, username=username, password=password, on_message=on_message
    )
    await client.subscribe([(topics.topic_filter(topics.HANDSHAKE, gateway_id, topics.ANY, topics.UP), 1)])
    ready.set()
    await asyncio.to_thread(stop.wait)
    await client.close()


# -- the flooder: bogus handshake messages from raw sockets, paced ------------------------------------


def _connect(port: int, username: str, password: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(*NODELAY)
    sock.sendall(codec.connect(username.encode(), username=username.encode(), password=password.encode(),
                               keepalive=0))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise ConnectionError(f"{username}: closed during CONNECT")
        connack += chunk
    if connack[3] != 0:
        raise ConnectionError(f"{username}: CONNACK {connack.hex()}")
    return sock


def _publish(topic: bytes, payload: bytes) -> bytes:  # QoS 0: the attacker's cheapest choice
    return codec.publish(topic, payload)


def run_flooder(
    port: int,
    gateway_id: str,
    accounts: list[tuple[str, str, str]],
    rate: float,
    ready: Any,
    stop: Any,
    sent: Any,
) -> None:
    """``accounts``: (username, password, kind) with kind "hello" (well-formed HELLOs with random
    fields, for an id the ledger does not know) or "garbage" (random bytes of random length on an
    enrolled device's own handshake and data topics). Sends ``rate`` messages/s in total, in 10 ms
    ticks spread over the connections."""
    socks = []
    for username, password, kind in accounts:
        socks.append((_connect(port, username, password), username, kind))

    def drain(sock: socket.socket) -> None:
        sock.settimeout(None)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    for sock, _, _ in socks:
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    ready.set()
    tick, count = 0.01, 0
    started = time.perf_counter()
    while not stop.is_set():
        # Catch up to the schedule (at most one tick's worth late), then sleep one tick.
        n = min(int((time.perf_counter() - started) * rate) - count, int(rate * tick * 5))
        buffers: dict[int, list[bytes]] = {}
        for i in range(count, count + max(0, n)):
            j = i % len(socks)
            _, username, kind = socks[j]
            if kind == "hello":
                topic = topics.handshake_up(gateway_id, username).encode()
                payload = b"\x11" + os.urandom(20)
            elif i % 2:
                topic = topics.handshake_up(gateway_id, username).encode()
                payload = os.urandom(1 + i % 40)
            else:
                topic = topics.data(gateway_id, username, "telemetry").encode()
                payload = os.urandom(1 + i % 60)
            buffers.setdefault(j, []).append(_publish(topic, payload))
        for j, packets in buffers.items():
            with contextlib.suppress(OSError):
                socks[j][0].sendall(b"".join(packets))
        count += max(0, n)
        sent.value = count
        time.sleep(tick)
    for sock, _, _ in socks:
        sock.close()
