"""Ledger figures: local index vs chain reads, batch registration on both backends, revocation latency.

- index_lookup_us / chain_call_us: one device look-up in the local SQLite identity index
  (``IdentityIndex.device``) against one ``eth_call`` of the registry's ``device()`` view through web3
  on anvil, same devices, same run; medians. ``index_vs_chain_ratio`` = chain / index.
- batch_register_per_s_embedded / _node: devices/s registered with ``registerMany`` in batches of
  200 (receipt awaited for each batch) on the durable embedded chain and on anvil.
- revocation_index_latency_ms: on anvil, from the revoke transaction's receipt to the index
  subscriber's callback, with the gateway's default poll interval (0.2 s); median of 10.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ledger_bridge import EthereumTesterBackend, Ledger, Role, RpcBackend, Signer
from ledger_bridge.anvil import AnvilNode
from ledger_bridge.embedded import EmbeddedBackend
from ledger_bridge.enrollment import ProvisionedDevice
from ledger_bridge.index import IdentityIndex, LedgerSource

ETH = 10**18
FW = bytes(32)


async def _channel(backend: object) -> tuple[Ledger, dict[str, object]]:
    ledger = Ledger(backend=backend)  # type: ignore[arg-type]
    await ledger.__aenter__()
    signers = {n: Signer.generate(label=n) for n in ("admin", "manufacturer", "owner")}
    for s in signers.values():
        await ledger.fund(s.address, 1000 * ETH)
    await ledger.deploy(admin=signers["admin"])
    actors = {n: ledger.actor(s) for n, s in signers.items()}
    await actors["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)  # type: ignore[attr-defined]
    return ledger, actors


def _devices(n: int) -> list[ProvisionedDevice]:
    return [ProvisionedDevice.generate(model="bench", serial=f"B{i}", firmware_hash=FW) for i in range(n)]


async def _batch_rate(backend: object, n: int) -> float:
    ledger, actors = await _channel(backend)
    try:
        regs = [d.registration() for d in _devices(n)]
        t0 = time.perf_counter()
        for i in range(0, n, 200):
            await actors["manufacturer"].register_many(regs[i : i + 200])  # type: ignore[attr-defined]
        return n / (time.perf_counter() - t0)
    finally:
        await ledger.__aexit__(None, None, None)


async def _anvil_figures(url: str) -> dict[str, float]:
    ledger, actors = await _channel(RpcBackend(url=url, name="anvil"))
    try:
        devices = _devices(400)
        regs = [d.registration() for d in devices]
        for i in range(0, len(regs), 200):
            await actors["manufacturer"].register_many(regs[i : i + 200])  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory() as tmp:
            index = IdentityIndex(Path(tmp) / "index.sqlite", start_block=ledger.channel.deployed_block)
            source = LedgerSource(ledger)
            await index.sync(source)
            ids = [d.device_id for d in devices]
            lookups = []
            for _ in range(20):
                t0 = time.perf_counter()
                for did in ids:
                    index.device(did)
                lookups.append((time.perf_counter() - t0) / len(ids) * 1e6)
            calls = []
            for did in ids[:100]:
                t0 = time.perf_counter()
                await ledger.device(did)
                calls.append((time.perf_counter() - t0) * 1e6)
            # revocation: claim + activate 10 devices, then revoke each and time receipt -> subscriber
            owner = actors["owner"]
            for d in devices[:10]:
                await owner.claim(d.device_id, d.claim_code)  # type: ignore[attr-defined]
                await owner.activate(d.device_id)  # type: ignore[attr-defined]
            await index.sync(source)
            seen: dict[bytes, float] = {}
            index.subscribe(lambda r: [seen.setdefault(did, time.perf_counter()) for did in r.changed])
            stop = asyncio.Event()

            async def poll() -> None:
                while not stop.is_set():
                    await index.sync(source)
                    await asyncio.sleep(0.2)

            poller = asyncio.create_task(poll())
            latencies = []
            for d in devices[:10]:
                await owner.revoke(d.device_id)  # type: ignore[attr-defined]
                t_receipt = time.perf_counter()
                while d.device_id not in seen:
                    await asyncio.sleep(0.005)
                latencies.append((seen[d.device_id] - t_receipt) * 1000)
            stop.set()
            await poller
            index.close()
        return {
            "index_lookup_us": round(statistics.median(lookups), 2),
            "chain_call_us": round(statistics.median(calls), 1),
            "index_vs_chain_ratio": round(statistics.median(calls) / statistics.median(lookups), 1),
            "revocation_index_latency_ms": round(statistics.median(latencies), 1),
            "revocation_index_latency_max_ms": round(max(latencies), 1),
        }
    finally:
        await ledger.__aexit__(None, None, None)


async def _main() -> dict[str, float]:
    out: dict[str, float] = {}
    with AnvilNode() as node:
        out.update(await _anvil_figures(node.url))
        out["batch_register_per_s_node"] = round(
            await _batch_rate(RpcBackend(url=node.url, name="anvil"), 2000), 1
        )
    with tempfile.TemporaryDirectory() as tmp:
        out["batch_register_per_s_embedded"] = round(
            await _batch_rate(EmbeddedBackend(Path(tmp) / "chain.sqlite"), 2000), 1
        )
    out["batch_register_per_s_eth_tester"] = round(await _batch_rate(EthereumTesterBackend(), 1000), 1)
    return out


def run() -> dict[str, float]:
    return asyncio.run(_main())
