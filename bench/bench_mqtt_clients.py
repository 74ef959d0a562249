"""Which MQTT client the gateway should use, the request/response ceiling, and the broker enforcer at 10k.

Every figure runs against a private mosquitto 2.0.11 on 127.0.0.1 (``firmware_sim.broker.MosquittoBroker``:
``set_tcp_nodelay true``, persistence off, ``max_queued_messages`` raised so nothing is dropped).
TCP_NODELAY is on for every client socket.

Receive rate (``recv_<lib>_qos<q>_per_s``): one subscriber of the library under test, subscribed to
``bench/rx/#``; a raw-socket publisher thread in this process writes pre-encoded 100-byte PUBLISH packets
as fast as the kernel takes them. Rate = messages received / time from the first to the last message.
paho runs its loop thread (``loop_start``); aiomqtt iterates ``client.messages``; gmqtt uses its callback;
``lean`` is the gateway's own client (``gateway.mqtt.MqttClient``, an ``asyncio.Protocol``, callback).

Memory per connection (``conn_kib_<lib>``): a fresh process (spawn) opens ``CONN_COUNT`` idle
connections of the library under test to the broker (keepalive 60 s, one subscription each, as a
device or the simulator holds them) and reports the growth of its resident set divided by the count.

Request/response ceiling with gmqtt (``mqtt_rr_gmqtt_ceiling_per_s``, QoS 0; ``..._qos1_per_s``): one
responder doing no work (a gmqtt client in its own process, subscribed to ``bench/rr/req/#``, echoing
each request to ``bench/rr/resp/<conn>/<requester>``) and 1,000 requesters in this process, multiplexed
over 10 gmqtt connections (100 each, each connection subscribed to its ``bench/rr/resp/<conn>/+``), each
requester sending one 100-byte request and awaiting its answer, in a loop. Counted over 5 s after a 1 s
warm-up; ``mqtt_rr_gmqtt_p50_ms`` is the median round trip at QoS 0. (``mqtt_rr_ceiling_per_s`` itself,
which the issue's e2e target divides, is measured by bench_gateway with the e2e run's own client.)

Enforcer (``enforcer_*``): 10,000 enrolled devices (all granted two data streams: the largest ACL
file), ``ENFORCER_CONNECTED`` of them connected (raw sockets, MQTT 3.1.1, keepalive 0).
``enforcer_reload_ms_10k``: SIGHUP → the first QoS 1 PUBACK to a client pinging the broker (mosquitto is
single-threaded, so the PUBACK waits for the reload), median of 5. ``enforcer_cutoff_ms_10k``: the call
``await enforcer.cut_off(device)`` → that device's socket reads EOF, median of 5 with no reload in the
preceding second; ``enforcer_cutoff_worst_ms_10k``: the same issued right after another reload (it waits
the urgent interval, 0.5 s). ``enforcer_reload_ms_10k_per_device_blocks`` reloads the alternative
design (a ``user`` block with handshake topics for every device instead of two ``%u`` patterns).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import threading
import time
from typing import Any

from firmware_sim.broker import MosquittoBroker
from gateway.broker import (
    AuthorizeGateway,
    BrokerSecret,
    Enroll,
    Grant,
    MosquittoEnforcer,
    RightsMode,
    mosquitto_config_lines,
)
from gateway.mqtt import codec

PAYLOAD = b"x" * 100
RECV_COUNT = {0: 50_000, 1: 20_000}
CONN_COUNT = int(os.environ.get("BENCH_CONN_COUNT", "2000"))
RR_REQUESTERS, RR_CONNECTIONS, RR_WARMUP_S, RR_MEASURE_S = 1_000, 10, 1.0, 5.0
ENFORCER_DEVICES = int(os.environ.get("BENCH_ENFORCER_DEVICES", "10000"))
ENFORCER_CONNECTED = int(os.environ.get("BENCH_ENFORCER_CONNECTED", "10000"))
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- raw MQTT 3.1.1 packets (the load generators must not be the bottleneck) ---------------------------


def connect_packet(client_id: str = "", username: str | None = None, password: str | None = None) -> bytes:
    return codec.connect(client_id.encode(), username=None if username is None else username.encode(),
                         password=None if password is None else password.encode(), keepalive=0)


def publish_packet(topic: str, payload: bytes, qos: int, mid: int = 1) -> bytes:
    return codec.publish(topic.encode(), payload, qos=qos, packet_id=mid if qos else 0)


def raw_connect(host: str, port: int, username: str | None = None, password: str | None = None,
                client_id: str = "") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(*NODELAY)
    sock.sendall(connect_packet(client_id, username, password))
    connack = _recv_exactly(sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        sock.close()
        raise ConnectionError(f"CONNACK refused: {connack.hex()}")
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _blast(host: str, port: int, count: int, qos: int) -> threading.Thread:
    """Start a thread publishing ``count`` packets on ``bench/rx/t`` from a raw socket."""
    packets = b"".join(publish_packet("bench/rx/t", PAYLOAD, qos, (i % 65535) + 1) for i in range(count))
    sock = raw_connect(host, port, client_id=f"blaster-{qos}")

    def drain() -> None:  # swallow PUBACKs so the broker never blocks on us
        sock.settimeout(None)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def send() -> None:
        threading.Thread(target=drain, daemon=True).start()
        sock.sendall(packets)
        time.sleep(30)  # keep the socket (and its in-flight QoS 1 messages) until the reader is done
        sock.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


class _Counter:
    def __init__(self, expected: int) -> None:
        self.expected, self.count, self.first, self.last = expected, 0, 0.0, 0.0
        self.done = threading.Event()

    def hit(self) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()

    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.count > 1 else 0.0


# -- receive rates -------------------------------------------------------------------------------------


def recv_paho(broker: MosquittoBroker, qos: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    counter = _Counter(RECV_COUNT[qos])
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-rx-{qos}")
    client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(*NODELAY)
    client.on_message = lambda _c, _u, _m: counter.hit()
    client.on_subscribe = lambda *a: subscribed.set()
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("bench/rx/#", qos)
    subscribed.wait(5)
    _blast(broker.host, broker.port, counter.expected, qos)
    counter.done.wait(60)
    client.disconnect()
    client.loop_stop()
    return counter.rate()


async def _recv_aiomqtt(broker: MosquittoBroker, qos: int) -> float:
    import aiomqtt

    counter = _Counter(RECV_COUNT[qos])
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"aiomqtt-rx-{qos}",
                              socket_options=[NODELAY]) as client:
        await client.subscribe("bench/rx/#", qos)
        _blast(broker.host, broker.port, counter.expected, qos)
        async with asyncio.timeout(60):
            async for _ in client.messages:
                counter.hit()
                if counter.done.is_set():
                    break
    return counter.rate()


async def _gmqtt_client(broker: MosquittoBroker, client_id: str, **handlers: Any) -> Any:
    import gmqtt

    client = gmqtt.Client(client_id)
    for name, handler in handlers.items():
        setattr(client, name, handler)
    await client.connect(broker.host, broker.port, keepalive=60, version=gmqtt.constants.MQTTv311)
    transport = client._connection._transport
    transport.get_extra_info("socket").setsockopt(*NODELAY)
    return client


async def _recv_gmqtt(broker: MosquittoBroker, qos: int) -> float:
    counter = _Counter(RECV_COUNT[qos])
    subscribed = asyncio.Event()

    def on_message(*_args: Any) -> int:
        counter.hit()
        return 0

    client = await _gmqtt_client(broker, f"gmqtt-rx-{qos}", on_message=on_message,
                                 on_subscribe=lambda *a: subscribed.set())
    client.subscribe("bench/rx/#", qos=qos)
    await asyncio.wait_for(subscribed.wait(), 5)
    _blast(broker.host, broker.port, counter.expected, qos)
    await asyncio.to_thread(counter.done.wait, 60)
    await client.disconnect()
    return counter.rate()


async def _recv_lean(broker: MosquittoBroker, qos: int) -> float:
    from gateway.mqtt import MqttClient

    counter = _Counter(RECV_COUNT[qos])
    client = await MqttClient.connect(broker.host, broker.port, client_id=f"lean-rx-{qos}",
                                      on_message=lambda _t, _p: counter.hit())
    await client.subscribe([("bench/rx/#", qos)])
    _blast(broker.host, broker.port, counter.expected, qos)
    await asyncio.to_thread(counter.done.wait, 60)
    await client.close()
    return counter.rate()


# -- memory per held connection -----------------------------------------------------------------------


def _rss_kib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


async def _hold_connections(lib: str, port: int, count: int) -> float:
    import gc

    held: list[Any] = []
    if lib == "gmqtt":  # import (and warm up) the library before the baseline
        import gmqtt  # noqa: F401
    elif lib == "aiomqtt":
        import aiomqtt
    from gateway.mqtt import MqttClient

    gc.collect()
    before = _rss_kib()
    broker = MosquittoBroker.__new__(MosquittoBroker)
    broker.host, broker.port = "127.0.0.1", port
    for i in range(count):
        if lib == "lean":
            c = await MqttClient.connect("127.0.0.1", port, client_id=f"mem-lean-{i}", keepalive=60)
            await c.subscribe([(f"bench/mem/{i}", 1)])
        elif lib == "gmqtt":
            c = await _gmqtt_client(broker, f"mem-gmqtt-{i}")
            c.subscribe(f"bench/mem/{i}", qos=1)
        else:
            c = aiomqtt.Client("127.0.0.1", port, identifier=f"mem-aiomqtt-{i}", keepalive=60)
            await c.__aenter__()
            await c.subscribe(f"bench/mem/{i}", qos=1)
        held.append(c)
    await asyncio.sleep(1.0)
    gc.collect()
    per_conn = (_rss_kib() - before) / count
    for c in held:
        if lib == "lean":
            await c.close()
        elif lib == "gmqtt":
            await c.disconnect()
        else:
            await c.__aexit__(None, None, None)
    return per_conn


def _memory_main(lib: str, port: int, count: int, out: Any) -> None:
    out.put(asyncio.run(_hold_connections(lib, port, count)))


def connection_memory(broker: MosquittoBroker) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, float] = {}
    for lib in ("lean", "gmqtt", "aiomqtt"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_main, args=(lib, broker.port, CONN_COUNT, queue), daemon=True)
        proc.start()
        out[f"conn_kib_{lib}"] = queue.get(timeout=180)
        proc.join(30)
    return out


def receive_rates(broker: MosquittoBroker) -> dict[str, float]:
    out: dict[str, float] = {}
    for qos in (0, 1):
        out[f"recv_paho_qos{qos}_per_s"] = recv_paho(broker, qos)
        out[f"recv_aiomqtt_qos{qos}_per_s"] = asyncio.run(_recv_aiomqtt(broker, qos))
        out[f"recv_gmqtt_qos{qos}_per_s"] = asyncio.run(_recv_gmqtt(broker, qos))
        out[f"recv_lean_qos{qos}_per_s"] = asyncio.run(_recv_lean(broker, qos))
    return out


# -- request/response ceiling --------------------------------------------------------------------------


def _responder_main(port: int, ready: Any, stop: Any) -> None:
    async def main() -> None:
        broker = MosquittoBroker.__new__(MosquittoBroker)  # only host/port are used
        broker.port = port

        def on_message(client: Any, topic: str, payload: bytes, qos: int, _props: Any) -> int:
            client.publish("bench/rr/resp/" + topic[len("bench/rr/req/"):], payload, qos=qos)
            return 0

        subscribed = asyncio.Event()
        client = await _gmqtt_client(broker, "rr-responder", on_message=on_message,
                                     on_subscribe=lambda *a: subscribed.set())
        client.subscribe("bench/rr/req/#", qos=1)
        await subscribed.wait()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await client.disconnect()

    asyncio.run(main())


async def _rr_requesters(broker: MosquittoBroker, qos: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    pending: dict[str, asyncio.Future[None]] = {}

    def on_message(_client: Any, topic: str, _payload: bytes, _qos: int, _props: Any) -> int:
        future = pending.pop(topic, None)
        if future is not None and not future.done():
            future.set_result(None)
        return 0

    clients = []
    for conn in range(RR_CONNECTIONS):
        subscribed = asyncio.Event()
        client = await _gmqtt_client(broker, f"rr-req-{qos}-{conn}", on_message=on_message,
                                     on_subscribe=lambda *a, ev=subscribed: ev.set())
        client.subscribe(f"bench/rr/resp/{conn}/+", qos=qos)
        await asyncio.wait_for(subscribed.wait(), 5)
        clients.append(client)
    counting, stopping = False, False
    done, rtts = 0, []

    async def requester(index: int) -> None:
        nonlocal done
        conn, client = index % RR_CONNECTIONS, clients[index % RR_CONNECTIONS]
        req, resp = f"bench/rr/req/{conn}/{index}", f"bench/rr/resp/{conn}/{index}"
        while not stopping:
            future = loop.create_future()
            pending[resp] = future
            started = time.perf_counter()
            client.publish(req, PAYLOAD, qos=qos)
            await asyncio.wait_for(future, 10)
            if counting:
                done += 1
                if index % 10 == 0:
                    rtts.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(requester(i)) for i in range(RR_REQUESTERS)]
    await asyncio.sleep(RR_WARMUP_S)
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(RR_MEASURE_S)
    counting, elapsed = False, time.perf_counter() - started
    stopping = True
    await asyncio.gather(*tasks)
    for client in clients:
        await client.disconnect()
    return done / elapsed, statistics.median(rtts) * 1000 if rtts else float("nan")


def rr_ceiling(broker: MosquittoBroker) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    responder = ctx.Process(target=_responder_main, args=(broker.port, ready, stop), daemon=True)
    responder.start()
    try:
        if not ready.wait(20):
            raise RuntimeError("the responder process did not start")
        rate0, p50 = asyncio.run(_rr_requesters(broker, 0))
        rate1, _ = asyncio.run(_rr_requesters(broker, 1))
    finally:
        stop.set()
        responder.join(10)
        if responder.is_alive():
            responder.kill()
    # named *_gmqtt: the mqtt_rr_ceiling_per_s is bench_gateway's, with the e2e run's own client
    return {"mqtt_rr_gmqtt_ceiling_per_s": rate0, "mqtt_rr_gmqtt_p50_ms": p50,
            "mqtt_rr_gmqtt_ceiling_qos1_per_s": rate1}


# -- the enforcer at 10,000 devices --------------------------------------------------------------------


async def _enforcer_figures(rights: RightsMode) -> dict[str, float]:
    """Figures for one rights mode; keys end in ``_10k`` for patterns, ``_10k_per_device`` otherwise."""
    suffix = "_10k" if rights == "patterns" else "_10k_per_device"
    broker = MosquittoBroker()
    password_file, acl_file = broker.directory / "passwords", broker.directory / "acl"
    broker.extra_config = mosquitto_config_lines(password_file, acl_file)
    enforcer = MosquittoEnforcer(password_file=password_file, acl_file=acl_file, reload=broker.reload,
                                 broker_address=(broker.host, broker.port), rights=rights,
                                 file_group=broker.file_group)
    device_ids = [f"{i:016x}" for i in range(1, ENFORCER_DEVICES + 1)]
    secret = BrokerSecret("bench-secret-identical-for-all")  # hashed with a fresh salt per device
    started = time.perf_counter()
    enforcer.stage([AuthorizeGateway(gateway_id="bench", secret=BrokerSecret.generate())])
    enforcer.stage(c for d in device_ids for c in (Enroll(device_id=d, secret=secret),
                                                   Grant(device_id=d, streams=frozenset({"temp", "hum"}))))
    enforcer.write_files()
    out = {f"enforcer_stage_and_write_ms{suffix}": (time.perf_counter() - started) * 1000,
           f"enforcer_pwfile_kib{suffix}": password_file.stat().st_size / 1024,
           f"enforcer_aclfile_kib{suffix}": acl_file.stat().st_size / 1024}
    sockets: list[socket.socket] = []
    with broker:
        async with enforcer:
            started = time.perf_counter()
            for d in device_ids[:ENFORCER_CONNECTED]:
                sockets.append(raw_connect(broker.host, broker.port, d, secret.reveal()))
                if time.perf_counter() - started > 40:
                    break
            if rights == "patterns":
                out["enforcer_connected_devices"] = float(len(sockets))
                out["enforcer_connect_per_s"] = len(sockets) / (time.perf_counter() - started)

            reloads = []
            for i in range(5):  # an enrolment that changes the files: SIGHUP → canary login accepted
                await asyncio.sleep(1.05)
                await enforcer.enroll(f"{0xF000000 + i:016x}", secret)
                reloads.append(enforcer.last_reload_seconds * 1000)
            out[f"enforcer_reload_ms{suffix}"] = statistics.median(reloads)

            async def cutoff_ms(index: int, after_reload: bool) -> float:
                sock = sockets[index]
                sock.settimeout(5)
                if after_reload:
                    await enforcer.enroll(f"{0xF100000 + index:016x}", secret)
                else:
                    await asyncio.sleep(1.05)
                t0 = time.perf_counter()
                closed = asyncio.create_task(asyncio.to_thread(sock.recv, 1))
                await enforcer.cut_off(device_ids[index])
                try:
                    if await closed != b"":
                        raise RuntimeError("the cut-off device received data instead of EOF")
                except TimeoutError:
                    raise RuntimeError(f"device {index} was not cut off within 5 s") from None
                return (time.perf_counter() - t0) * 1000

            typical = [await cutoff_ms(i, False) for i in range(5)]
            worst = [await cutoff_ms(i, True) for i in range(5, 8)]
            out[f"enforcer_cutoff_ms{suffix}"] = statistics.median(typical)
            out[f"enforcer_cutoff_worst_ms{suffix}"] = max(worst)
            signals = enforcer.signal_count / max(1, enforcer.reload_count)
            out[f"enforcer_signals_per_reload{suffix}"] = signals
    for sock in sockets:
        sock.close()
    return out


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    with MosquittoBroker(extra_config=["allow_anonymous true"]) as broker:
        results.update(receive_rates(broker))
        results.update(connection_memory(broker))
        results.update(rr_ceiling(broker))
    results.update(asyncio.run(_enforcer_figures("patterns")))
    results.update(asyncio.run(_enforcer_figures("per_device")))
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<48} {value:>14,.3f}")
