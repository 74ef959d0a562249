"""A site with its gateway daemons in this process on anvil, for the field benchmarks
(``bench_firmware``, ``bench_agent_rss``): ``firmware_sim.inproc.site`` on a fresh anvil node, each
gateway with its own ledger connection, the broker without a connection limit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from firmware_sim.inproc import Site, site
from gateway.settings import ProtocolSettings
from ledger_bridge.anvil import AnvilNode

__all__ = ["Site", "inproc_site"]


@contextlib.asynccontextmanager
async def inproc_site(
    tmp: Path, *, n_devices: int, gateway_ids: tuple[str, ...] = ("gw-a",)
) -> AsyncIterator[Site]:
    with AnvilNode() as node:
        async with site(
            tmp,
            n_devices=n_devices,
            gateway_ids=gateway_ids,
            policy_streams=("telemetry",),
            node=node,
            extra_config=["max_connections -1"],
            ready_timeout=120,
            poll_interval=0.2,
            gateway_settings={"protocol": ProtocolSettings(proof_timeout=5.0, session_lifetime=600)},
        ) as s:
            yield s
