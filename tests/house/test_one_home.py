"""Helpers that every side needs live once: systemd's notify protocol in ``device_agent.systemd``."""

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
