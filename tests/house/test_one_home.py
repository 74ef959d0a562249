"""Helpers that every side needs live once: systemd's notify protocol in ``device_agent.systemd``; a free
port for the runners (anvil, Mosquitto) in ``ledger_bridge.anvil``; the verified-data listener of tests
in ``firmware_sim.inproc`` (``Site.listener``); the agents' backoffs in ``device_agent.core.policy``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("device_agent", "gateway", "ledger_bridge", "firmware_sim")


def _sources_mentioning(text: str) -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "node_modules" not in path.parts and text in path.read_text()
    )


def test_sd_notify_is_written_once() -> None:
    assert _sources_mentioning("NOTIFY_SOCKET") == ["device_agent/systemd.py"]
    assert _sources_mentioning("WATCHDOG_USEC") == ["device_agent/systemd.py"]
    assert _sources_mentioning("def sd_notify") == ["device_agent/systemd.py"]


def test_free_port_is_written_once() -> None:
    assert _sources_mentioning("def free_port") == ["ledger_bridge/anvil.py"]


def test_the_verified_listener_is_the_site_s() -> None:
    here = Path(__file__).resolve()
    tests = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")
                   if p.resolve() != here and "verified_listener(" in p.read_text())
    assert tests == []
    assert "async def listener(" in (ROOT / "firmware_sim" / "inproc.py").read_text()


def test_the_agents_backoffs_are_the_core_policy_s() -> None:
    """Every wait before a dial or a handshake (the reconnect backoff, the long one after a refused login,
    the failover rounds) is drawn by ``AgentPolicy``: no agent adapter draws its own delay."""
    assert _sources_mentioning("def backoff_delay") == ["device_agent/core/policy.py"]
    agents = ROOT / "device_agent"
    adapters = [*(agents / "agent").glob("*.py"), *(agents / "micropython").glob("*.py"),
                ROOT / "firmware_sim" / "device.py"]
    for path in adapters:
        text = path.read_text()
        for drawn in ("SystemRandom", ".uniform(", "random.random(", "backoff_delay("):
            assert drawn not in text, f"{path.relative_to(ROOT)} draws a delay of its own ({drawn})"
