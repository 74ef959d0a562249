"""A fleet through a firmware update: ``firmware_update_fleet_s``.

Setup (not timed): anvil on loopback, real Mosquitto with the gateway's enforcement, two gateway
daemons in this process (``bench._inproc``), 1,000 devices onboarded and authorized for both
gateways, a maintainer approved for each, and every device authenticated once on image 1.0.

Timed, from the first transaction to the last verified message: the maintainer records image 2.0 for
every device (``recordFirmwareMany``, as many devices per transaction as the block gas limit allows;
each device moves to epoch 1 and the gateways cut it off), the owner re-seals the keys of both gateways
for every device (``ledger_bridge.firmware.reseal``: ``grantStatus`` reads a few dozen devices per view
call, then ``authorizeGatewayMany`` in batches), and every device comes back on image 2.0 (connect,
handshake under epoch 1, one DATA message) until the gateway has verified the data of all of them.
Target: <= 120 s. Parts: ``firmware_record_s``, ``firmware_reseal_s``, ``firmware_back_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

N_DEVICES = int(os.environ.get("BENCH_FIRMWARE_DEVICES", "1000"))
ETH = 10**18


async def _run() -> dict[str, float]:
    from bench._inproc import inproc_site
    from device_agent.core.events import Authenticated
    from firmware_sim.fleet import Backoff, Observer, Pacer, SiteAccess, gather_limited
    from ledger_bridge import Ledger, Role, RpcBackend, Signer
    from ledger_bridge.firmware import reseal
    from ledger_bridge.index import onchain_gateway_id

    new_image = hashlib.sha256(b"firmware 2.0").digest()
    gateways = ("gw-a", "gw-b")
    with tempfile.TemporaryDirectory(prefix="diams-bench-fw-") as tmp:
        async with inproc_site(Path(tmp), n_devices=N_DEVICES, gateway_ids=gateways) as s:
            print(f"   {N_DEVICES} devices onboarded for {', '.join(gateways)}", flush=True)
            # The owner and the maintainer work from their own machines: their own ledger connections,
            # not the one the in-process gateways poll through (one worker thread each).
            url, channel = s.node.url, s.ledger.channel
            ledger = Ledger(backend=RpcBackend(url=url, name="anvil-owner"), channel=channel)
            await ledger.__aenter__()
            owner = ledger.actor(s.signers["owner"])
            signer = Signer.generate(label="maintainer")
            await ledger.fund(signer.address, 100 * ETH)
            await ledger.actor(s.signers["admin"]).grant_role(Role.MAINTAINER, signer.address)
            maintainer_ledger = Ledger(backend=RpcBackend(url=url, name="anvil-maint"), channel=channel)
            await maintainer_ledger.__aenter__()
            maintainer = maintainer_ledger.actor(signer)
            for d in s.devices:
                await owner.approve_maintainer(d.device_id, signer.address)
            print(f"   maintainer approved for {N_DEVICES} devices", flush=True)
            observer = await Observer().start(
                "127.0.0.1", s.broker.port, username="gateway-gw-a.1", password=s.secrets["gw-a"]
            )
            access = SiteAccess(
                host="127.0.0.1",
                port=s.broker.port,
                gateway_id="gw-a",
                identities=iter(()),
                pacer=Pacer(1000.0),
                backoff=Backoff(base=0.5, cap=4.0),
                rng=random.Random(7),
            )

            async def once(dev: Any) -> bool:
                return await access.connect(dev) and isinstance(await access.authenticate(dev), Authenticated)

            # the gateways index the fleet from the chain, and the enforcer admits it at the broker
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not all(
                d.device_id in gw.devices.entries for gw in s.gateways.values() for d in s.devices
            ):
                await asyncio.sleep(0.2)
            indexed = {
                gid: sum(d.device_id in gw.devices.entries for d in s.devices)
                for gid, gw in s.gateways.items()
            }
            if min(indexed.values()) < N_DEVICES:
                raise RuntimeError(f"the gateways did not index the fleet within 300 s: {indexed}")
            await asyncio.sleep(2.0)
            before = [access.device(d) for d in s.devices]
            ok = await gather_limited([once(d) for d in before])
            for d in before:
                await d.close()
            print(f"   {sum(ok)}/{N_DEVICES} devices authenticated on image 1.0", flush=True)
            if sum(ok) < N_DEVICES * 0.99:  # the figure would time something else than an update
                raise RuntimeError(f"only {sum(ok)}/{N_DEVICES} devices authenticated before the update")

            t0 = time.monotonic()
            await maintainer.record_firmware_many([d.device_id for d in s.devices], new_image)
            t1 = time.monotonic()
            updated = [dataclasses.replace(d, firmware_hash=new_image) for d in s.devices]
            on_chain = [onchain_gateway_id(g.encode()) for g in gateways]
            report = await reseal(ledger, owner, updated, gateways=on_chain)
            t2 = time.monotonic()
            print(f"   {report.summary()}", flush=True)

            async def back(dev: Any) -> bool:
                """Until the gateway serves it under the new epoch (it polls the ledger)."""
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    if (dev.client is None or not dev.client.is_open) and not await access.connect(dev):
                        continue
                    if isinstance(await access.authenticate(dev), Authenticated):
                        return access.send(dev, "telemetry", b"image 2.0")
                    await asyncio.sleep(0.5 + random.random() * 0.5)
                return False

            after = [access.device(u, epoch=report.epochs[u.device_id], counter=1) for u in updated]
            sent = sum(await gather_limited([back(d) for d in after]))
            hexes = [d.hex for d in after]
            deadline = time.monotonic() + 60
            while sum(observer.per_device[h] for h in hexes) < N_DEVICES and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            verified = sum(1 for h in hexes if observer.per_device[h] >= 1)
            t3 = time.monotonic()
            for d in after:
                await d.close()
            await observer.close()
            await ledger.__aexit__(None, None, None)
            await maintainer_ledger.__aexit__(None, None, None)
    if verified < N_DEVICES:
        raise RuntimeError(f"only {verified}/{N_DEVICES} devices came back with data verified")
    return {
        "firmware_update_devices": float(N_DEVICES),
        "firmware_update_fleet_s": t3 - t0,
        "firmware_record_s": t1 - t0,
        "firmware_reseal_s": t2 - t1,
        "firmware_back_s": t3 - t2,
        "firmware_resealed_keys": float(report.resealed),
        "firmware_devices_back_sent": float(sent),
        "firmware_devices_back_verified": float(verified),
    }


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12,.2f}")
