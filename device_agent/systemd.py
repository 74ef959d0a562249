"""systemd's process protocol for the agent and the gateway: ``sd_notify`` (a datagram to
``$NOTIFY_SOCKET``: READY=1, WATCHDOG=1, STOPPING=1, a few lines and no dependency) and the watchdog
period systemd asks of this process. Outside systemd both are no-ops."""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["sd_notify", "watchdog_interval"]

log = logging.getLogger("diams.systemd")


def sd_notify(message: str) -> bool:
    """Send one notification to systemd (``Type=notify``); False when not running under it or when
    the socket refuses it (logged: a unit waiting for READY=1 would otherwise time out unexplained)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
