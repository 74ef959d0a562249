"""The gateway tests' site: ``firmware_sim.inproc`` (real Mosquitto with the enforcer's files, a real
EVM ledger with every actor, devices onboarded as their actors would, the gateway daemons in this
process) behind the suite's rule for a missing broker: fail in CI, skip elsewhere (``require``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from firmware_sim import inproc
from firmware_sim.broker import mosquitto_binary
from firmware_sim.inproc import FIRMWARE, POLICY, Site, start_gateway, stop_gateway
from tests.conftest import require

__all__ = ["FIRMWARE", "POLICY", "Site", "site", "start_gateway", "stop_gateway"]


@contextlib.asynccontextmanager
async def site(tmp: Path, **options: Any) -> AsyncIterator[Site]:
    """``firmware_sim.inproc.site`` with its options, once Mosquitto is known to be installed."""
    require(mosquitto_binary() is not None, "mosquitto")
    async with inproc.site(tmp, **options) as the_site:
        yield the_site
