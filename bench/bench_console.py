"""diams-console figures (100,000 devices in the identity index; the chain is never read by these):

- ``console_devices_page_ms``: server time (from the request reaching the app to the response being
  ready) for the devices page filtered by state and id prefix, median of 50;
- ``api_device_get_p99_ms``: p99 latency of ``GET /api/devices/{id}`` (bearer token, random ids) with 50
  concurrent clients (in a process of their own), seen by the clients, 5,000 requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DEVICES = 100_000


def _fill(index: Any, n: int) -> list[bytes]:
    """Fold synthetic registration/claim/activation events into the index, as a sync would."""
    from ledger_bridge.model import LedgerEvent

    rng = random.Random(7)
    ids = [rng.randbytes(8) for _ in range(n)]
    owners = [f"0x{rng.randbytes(20).hex()}" for _ in range(50)]
    events = []
    block = 1
    for i, d in enumerate(ids):
        fw = bytes(32)
        events.append(
            LedgerEvent(
                name="DeviceRegistered",
                block_number=block,
                transaction_hash="0x",
                log_index=3 * i,
                args={"id": d, "manufacturer": owners[0], "firmwareHash": fw},
            )
        )
        if i % 10:
            events.append(
                LedgerEvent(
                    name="DeviceClaimed",
                    block_number=block,
                    transaction_hash="0x",
                    log_index=3 * i + 1,
                    args={"id": d, "owner": owners[i % 50]},
                )
            )
            if i % 3:
                events.append(
                    LedgerEvent(
                        name="DeviceActivated",
                        block_number=block,
                        transaction_hash="0x",
                        log_index=3 * i + 2,
                        args={"id": d, "by": owners[i % 50]},
                    )
                )
    index._apply_batch(events, block, None)
    return ids


def run() -> dict[str, float]:
    return asyncio.run(_run())


async def _run() -> dict[str, float]:
    from aiohttp import ClientSession, web

    from ledger_bridge import EthereumTesterBackend, Ledger, Signer
    from ledger_bridge.console import ConsoleService, SessionStore, create_app
    from ledger_bridge.index import IdentityIndex

    with tempfile.TemporaryDirectory() as tmp:
        async with Ledger(backend=EthereumTesterBackend()) as ledger:
            admin = Signer.generate()
            await ledger.fund(admin.address, 10**18)
            await ledger.deploy(admin=admin)
            index = IdentityIndex(Path(tmp) / "index.sqlite", start_block=10**9)  # never syncs past the fill
            ids = _fill(index, DEVICES)
            service = ConsoleService(ledger=ledger, index=index, sync_interval_s=3600)
            service.sync = _no_sync  # type: ignore[method-assign]
            sessions = SessionStore()
            session = sessions.open(Signer.generate(label="bench"), frozenset())
            app = create_app(service, sessions=sessions)
            server_ms: list[float] = []

            @web.middleware
            async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
                t0 = time.perf_counter()
                response = await handler(request)
                if request.path == "/devices":
                    server_ms.append((time.perf_counter() - t0) * 1000)
                return response

            app.middlewares.insert(0, timed)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            cookies = {"diams_session": session.token}
            try:
                async with ClientSession(cookies=cookies) as http:
                    prefixes = [os.urandom(1).hex() for _ in range(50)]
                    for p in prefixes:
                        async with http.get(f"{url}/devices?state=Active&prefix={p}&limit=50") as r:
                            assert r.status == 200, await r.text()
                            await r.read()
                page_ms = statistics.median(server_ms)
                sample = [d.hex() for d in random.Random(3).sample(ids, 5000)]
                loop = asyncio.get_running_loop()
                with concurrent.futures.ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn")
                ) as pool:
                    latencies = await loop.run_in_executor(pool, _load, url, session.token, sample)
            finally:
                await runner.cleanup()
                index.close()
    latencies.sort()
    return {
        "console_devices_page_ms": round(page_ms, 3),
        "api_device_get_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
    }


async def _no_sync() -> None:
    return None


def _load(url: str, token: str, ids: list[str], clients: int = 50, total: int = 5000) -> list[float]:
    """50 concurrent clients in a process of their own, -> latencies in ms."""
    from aiohttp import ClientSession, TCPConnector

    async def main() -> list[float]:
        latencies: list[float] = []
        rng = random.Random(11)
        headers = {"Authorization": f"Bearer {token}"}
        async with ClientSession(connector=TCPConnector(limit=clients), headers=headers) as http:

            async def client(n: int) -> None:
                for _ in range(n):
                    d = rng.choice(ids)
                    t0 = time.perf_counter()
                    async with http.get(f"{url}/api/devices/{d}") as r:
                        await r.read()
                        assert r.status == 200
                    latencies.append((time.perf_counter() - t0) * 1000)

            await asyncio.gather(*(client(total // clients) for _ in range(clients)))
        return latencies

    return asyncio.run(main())
