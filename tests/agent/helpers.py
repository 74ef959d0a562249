"""Running agents for the agent tests (``Device`` and ``running`` live in ``firmware_sim.agents``)."""

from __future__ import annotations

from firmware_sim.agents import Device, running
from tests.waiting import wait_until

__all__ = ["Device", "running", "wait_until"]
