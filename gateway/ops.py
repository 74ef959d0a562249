"""Operations surface: Prometheus metrics, /healthz /readyz /metrics over HTTP, and sd_notify.

sd_notify is a datagram to ``$NOTIFY_SOCKET`` (systemd's protocol, a few lines; no dependency).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger("diams.gateway.ops")


class Metrics:
    """Counters and gauges, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.counters: Counter[tuple[str, str]] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        self.counters[(name, label)] += n

    def get(self, name: str, label: str = "") -> int:
        return self.counters[(name, label)]

    def gauge(self, name: str, fn: Callable[[], float], help_text: str) -> None:
        self.gauges[name] = fn
        self.help[name] = help_text

    def render(self) -> str:
        lines = []
        names = sorted({n for n, _ in self.counters})
        for name in names:
            lines.append(f"# TYPE diams_{name}_total counter")
            for (n, label), value in sorted(self.counters.items()):
                if n == name:
                    lab = f'{{reason="{label}"}}' if label else ""
                    lines.append(f"diams_{name}_total{lab} {value}")
        for name, fn in sorted(self.gauges.items()):
            lines.append(f"# HELP diams_{name} {self.help[name]}")
            lines.append(f"# TYPE diams_{name} gauge")
            try:
                lines.append(f"diams_{name} {float(fn())}")
            except Exception:  # a broken gauge must not break the scrape
                log.exception("gauge %s failed", name)
        return "\n".join(lines) + "\n"


class HealthServer:
    """/healthz: the loop answers. /readyz: ``ready()`` returns (True, why) . /metrics: Prometheus."""

    def __init__(self, host: str, port: int, metrics: Metrics, ready: Callable[[], tuple[bool, str]]) -> None:
        self.host, self.port = host, port
        self.metrics = metrics
        self.ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and site._server is not None and site._server.sockets:  # type: ignore[attr-defined]
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain")


def sd_notify(message: str) -> bool:
    """Send one notification to systemd; False when not running under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
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
