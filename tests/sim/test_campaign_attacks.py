"""Short pieces of the campaign's attacks (firmware_sim/campaign_attacks.py), without a campaign."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from aiohttp import web

from firmware_sim.broker import mosquitto_binary
from firmware_sim.campaign_attacks import (
    CONSOLE_PATHS,
    fuzz_http,
    fuzz_requests,
    http_status,
    refused_connect,
)
from gateway.broker import gateway_username
from tests.broker.conftest import running_enforced_broker
from tests.conftest import require


def _split(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, body = raw.split(b"\r\n\r\n", 1)
    line, *fields = head.split(b"\r\n")
    return line, dict(f.split(b": ", 1) for f in fields), body


def test_every_fuzzed_request_is_complete_and_says_its_length() -> None:
    """A server waiting for bytes that never come would look like a hang, not a refusal."""
    requests = fuzz_requests(random.Random(7), 500, CONSOLE_PATHS, "127.0.0.1:1")
    assert len(requests) == 500 and len(set(requests)) > 450
    for raw in requests:
        line, fields, body = _split(raw)
        assert line.endswith(b" HTTP/1.1")
        assert int(fields[b"Content-Length"]) == len(body)
        assert fields[b"Connection"] == b"close"
    methods = {_split(r)[0].split(b" ")[0] for r in requests}
    assert {b"GET", b"POST", b"DELETE"} <= methods and len(methods) >= 8  # junk methods too
    assert fuzz_requests(random.Random(7), 20, CONSOLE_PATHS, "h") == fuzz_requests(
        random.Random(7), 20, CONSOLE_PATHS, "h"
    )  # a seed replays a campaign's requests


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\nX: y\r\n\r\n", 503),
        (b"", None),
        (b"garbage", None),
        (b"HTTP/1.1 abc\r\n", None),
    ],
)
def test_http_status(response: bytes, status: int | None) -> None:
    assert http_status(response) == status


@pytest.mark.asyncio
async def test_the_fuzzer_counts_server_errors_so_the_attack_can_fail() -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a handler that crashes")

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/api/devices", boom)
    app.router.add_route("*", "/", fine)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        ok = fuzz_requests(random.Random(1), 30, ["/"], f"127.0.0.1:{port}")
        crashing = [
            "GET /api/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()
        ]
        counts = await fuzz_http("127.0.0.1", port, ok + crashing)
    finally:
        await runner.cleanup()
    assert counts.get("5xx") == 1, counts
    assert sum(counts.values()) == 31


@pytest.mark.asyncio
async def test_the_enforced_broker_refuses_every_pre_authentication_login() -> None:
    require(mosquitto_binary() is not None, "mosquitto")
    async with running_enforced_broker(rights="per_device") as env:
        host, port = env.broker.host, env.broker.port
        gateway = gateway_username(env.gateway_id)
        codes = await asyncio.gather(
            asyncio.to_thread(refused_connect, host, port, "stranger"),
            asyncio.to_thread(refused_connect, host, port, gateway),
            asyncio.to_thread(refused_connect, host, port, "x", gateway, "wrong"),
            asyncio.to_thread(refused_connect, host, port, "y", "00000000000000d1", ""),
        )
        assert all(c != 0 for c in codes), codes
        # and the helper does see an accepted login: the gateway's own account
        assert (
            await asyncio.to_thread(
                refused_connect, host, port, gateway, gateway, env.gateway_secret.reveal()
            )
            == 0
        )


@pytest.mark.asyncio
async def test_the_counters_a_device_sent_are_those_the_gateway_audited_also_after_a_no_session_signal(
    tmp_path,
) -> None:
    """The campaign's evidence of honesty: a device's HELLOs as sent. Guessing them from the policy's
    state (as the campaign first did) took the HELLO a no-session signal starts for a forged one."""
    import json

    from device_agent.core import events
    from tests.gateway.stack import site

    async with site(tmp_path, n_devices=1) as s:
        gw = s.gateways["gw-a"]
        dev = s.sim(0)
        await dev.connect()
        assert isinstance(await dev.authenticate(), events.Authenticated)
        dev._clock = lambda: time.monotonic() + 60  # past the policy's floor between signal-led handshakes
        assert dev.no_session()  # what the gateway's "no session" REJECT makes the policy do
        assert isinstance(await dev.authenticate(), events.Authenticated)
        assert isinstance(await dev.authenticate(), events.Authenticated)
        await dev.close()
        audit = gw.settings.state_dir / "audit.log"
        audited = [
            (r["epoch"], r["counter"])
            for r in map(json.loads, audit.read_text().splitlines())
            if r["event"] == "authenticated"
        ]
    assert dev.hellos == audited and len(audited) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("kill_at", ["after_init", "after_reply", "after_confirm", "done_lost"])
async def test_a_device_killed_mid_rekey_is_never_locked_out_and_the_previous_owner_gets_nothing(
    tmp_path, kill_at
) -> None:
    """The campaign's mid-re-key kill on a real chain (eth-tester) with the real device console
    (``diams-agent rekey``): whatever the moment, the new owner's retry ends with the device and the
    owner holding one new secret, confirmed on chain, and the previous owner's INIT refused."""
    import random

    from firmware_sim.campaign_attacks import mid_rekey
    from firmware_sim.site import SitePlan, enroll
    from ledger_bridge import EthereumTesterBackend, Ledger

    plan = SitePlan(devices=0)
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        site = await enroll(ledger, plan, key_dir=tmp_path)
        outcome = await mid_rekey(
            random.Random(1),
            ledger=ledger,
            manufacturer=site.actors["manufacturer"],
            owner=site.actors["owner"],
            gateway=site.gateway_keys["gw-a"],
            policy_id=plan.policy_id,
            work=tmp_path / "rekey",
            kill_at=kill_at,
        )
    assert outcome.held, outcome.detail
