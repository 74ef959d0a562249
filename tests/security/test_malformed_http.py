"""The gateway's ops HTTP port (/healthz, /readyz, /metrics) under garbage from an unauthenticated
client: each malformed request is answered 400 and counted, and the log gets one warning line per
interval, with no traceback and none of the request's bytes (before: aiohttp logged each one at ERROR
with a traceback, so a client could flood the log)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.ops import HealthServer, Metrics

pytestmark = pytest.mark.asyncio

GARBAGE = [
    b"GET /\x00\x01evil HTTP/1.1\r\n\r\n",  # aiohttp: InvalidURLError
    b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",  # InvalidURLError, raised later in the parse
    b"\x16\x03\x01\x02\x00evil\r\n\r\n",  # TLS on the plain port: BadHttpMethod
    b"GET /healthz HTTP/9.9\r\n\r\n",  # BadStatusLine (version)
    b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",  # InvalidHeader
]


async def _send(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    await writer.wait_closed()
    return reply


async def test_malformed_requests_are_counted_and_logged_once_per_interval_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    server = HealthServer("127.0.0.1", 0, metrics, lambda: (True, "ok"))
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(20):
                for payload in GARBAGE:
                    assert (await _send(server.port, payload)).startswith(b"HTTP/1.0 400")
            assert (await _send(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"ok\n")
    finally:
        await server.stop()
    assert metrics.get("http_malformed_requests") == 20 * len(GARBAGE)
    assert "diams_http_malformed_requests_total 100.0" in metrics.render()
    said = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and said[0].exc_info is None
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith(("aiohttp", "diams")))
    assert "evil" not in caplog.text and "Traceback" not in caplog.text


async def test_the_next_line_comes_after_the_interval_and_tells_how_many_were_unsaid() -> None:
    from aiohttp.http_exceptions import InvalidURLError

    from gateway.ops import MalformedRequestLog

    now = [0.0]
    metrics = Metrics()
    logger = MalformedRequestLog(metrics, interval=60.0, clock=lambda: now[0])
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("diams.gateway.ops").addHandler(keep)
    try:
        for t in (0.0, 1.0, 59.0, 60.0, 61.0):
            now[0] = t
            logger.exception("Error handling request from %s", "10.0.0.9", exc_info=InvalidURLError("x"))
        logger.exception("Unhandled exception", exc_info=RuntimeError("a bug"))  # not malformed: ERROR
    finally:
        logging.getLogger("diams.gateway.ops").removeHandler(keep)
    lines = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(lines) == 2 and "; 1 since" in lines[0] and "; 3 since" in lines[1]
    assert metrics.get("http_malformed_requests") == 5
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
