"""The lean MQTT client while its connection closes: no exception escapes into the event loop (a
timer callback that raises, or a future whose exception nobody retrieves, is a traceback in the log
of a loaded cluster's clients)."""

import asyncio
import gc

import pytest

from firmware_sim.broker import MosquittoBroker, mosquitto_binary
from gateway.mqtt import MqttClient, MqttTimeout
from tests.conftest import require
from tests.waiting import swallowed_cancels


def _capture_loop_errors() -> list[dict]:
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


@pytest.mark.asyncio
async def test_keepalive_timer_on_a_closing_transport_is_quiet():
    require(mosquitto_binary() is not None, "mosquitto")
    with MosquittoBroker(extra_config=["allow_anonymous true"]) as broker:
        errors = _capture_loop_errors()
        c = await MqttClient.connect("127.0.0.1", broker.port, client_id="closing", keepalive=60)
        assert c._transport is not None
        c._transport.close()  # closing: connection_lost has not run yet
        loop = asyncio.get_running_loop()
        loop.call_soon(c._on_ping_timer)  # the keep-alive timer firing in that window
        await asyncio.wait_for(asyncio.shield(c.closed), 5)
        await asyncio.sleep(0.05)
        assert errors == []
        assert c._pong_due is False  # no PINGREQ was attempted on the closing transport


@pytest.mark.asyncio
async def test_a_connack_timeout_leaves_no_unretrieved_exception():
    errors = _capture_loop_errors()

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1024)  # reads CONNECT, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MqttTimeout, match="no CONNACK"):
            await MqttClient.connect("127.0.0.1", port, client_id="slow", timeout=0.3)
        await asyncio.sleep(0.1)  # connection_lost runs
        gc.collect()
        await asyncio.sleep(0)
        assert [e.get("message") for e in errors] == []
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_cancellation_is_never_swallowed_while_waiting_for_an_ack():
    """A task cancelled as its SUBACK/PUBACK arrives ends cancelled (3.11's wait_for returned the ack
    instead, so a gateway loop being stopped could go on, as in tests/ledger/test_honest_errors.py)."""
    client = MqttClient(client_id="gateway-race", on_message=None, keepalive=30, max_packet=1024)

    async def completed() -> asyncio.Task:
        fut = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(client._wait(fut, 10, "SUBACK"))
        await asyncio.sleep(0)
        fut.set_result("ack")  # the ack arrives
        return task

    cancelled, swallowed = await swallowed_cancels(completed, spins=4)
    assert cancelled > 0 and swallowed == []
