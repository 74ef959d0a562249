"""Operations surface: Prometheus metrics and /healthz /readyz /metrics over HTTP (systemd's
sd_notify and watchdog live in ``device_agent.systemd``, shared with the agent)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("diams.gateway.ops")


class Metrics:
    """Counters and gauges, exposed in the Prometheus text format by prometheus-client.

    Strategy: the hot path only adds to a ``Counter`` keyed by (name, reason); a collector turns the
    table into metric families at scrape time, and prometheus-client writes the exposition (names,
    HELP/TYPE lines, label escaping). One registry per gateway, so several gateways in one process
    (tests) never share a series."""

    def __init__(self) -> None:
        self.counters: Counter[tuple[str, str]] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        self.counters[(name, label)] += n

    def get(self, name: str, label: str = "") -> int:
        return self.counters[(name, label)]

    def gauge(self, name: str, fn: Callable[[], float], help_text: str) -> None:
        self.gauges[name] = fn
        self.help[name] = help_text

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        by_name: dict[str, list[tuple[str, int]]] = {}
        for (name, label), value in sorted(m.counters.items()):
            by_name.setdefault(name, []).append((label, value))
        for name, values in by_name.items():
            labelled = any(label for label, _ in values)  # an empty reason renders as no label
            family = CounterMetricFamily(
                f"diams_{name}", f"{name} events", labels=["reason"] if labelled else []
            )
            for label, value in values:
                family.add_metric([label] if labelled else [], value)
            yield family
        for name, fn in sorted(m.gauges.items()):
            try:
                reading = float(fn())
            except Exception:  # a broken gauge must not break the scrape
                log.exception("gauge %s failed", name)
                continue
            yield GaugeMetricFamily(f"diams_{name}", m.help[name], value=reading)


def parse_counters(text: str) -> dict[tuple[str, str], int]:
    """Prometheus text -> {(name, reason): value} for the ``diams_*_total`` counters (prometheus-client's
    parser; used by the simulator and the demo to read a gateway's /metrics)."""
    out: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("diams_") and sample.name.endswith("_total"):
                name = sample.name.removeprefix("diams_").removesuffix("_total")
                out[(name, sample.labels.get("reason", ""))] = int(sample.value)
    return out


class MalformedRequestLog(logging.Logger):
    """aiohttp's server logger for the ops port. A request aiohttp cannot parse (any ``HttpProcessingError``:
    bad URL, method, header, version; TLS on the plain port) is counted (``http_malformed_requests``) and
    told in one warning line at most every ``interval`` seconds, without a traceback or the request's
    bytes, so an unauthenticated client cannot flood the log. Any other error keeps aiohttp's message and
    traceback, at ERROR: those are bugs."""

    def __init__(self, metrics: Metrics, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("diams.gateway.ops.http")
        self.parent = log  # what aiohttp logs otherwise reaches the gateway's handlers
        self.metrics = metrics
        self.interval = interval
        self._clock = clock
        self._quiet_until = float("-inf")
        self._unsaid = 0

    def _malformed(self, args: tuple[Any, ...], exc_info: Any) -> bool:
        if not isinstance(exc_info, HttpProcessingError):
            return False
        self.metrics.inc("http_malformed_requests")
        self._unsaid += 1
        now = self._clock()
        if now >= self._quiet_until:
            remote = args[1] if len(args) > 1 else "?"
            log.warning("ops HTTP port: malformed request from %s (%s, answered 400); %d since the last "
                        "such line (metric diams_http_malformed_requests_total)", remote,
                        type(exc_info).__name__, self._unsaid)
            self._unsaid = 0
            self._quiet_until = now + self.interval
        return True

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if not self._malformed((msg, *args), exc_info):
            log.error(msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg: object, *args: object, **kw: Any) -> None:
        if not self._malformed((msg, *args), kw.get("exc_info")):
            log.debug(msg, *args, **kw)


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
        self._runner = web.AppRunner(app, access_log=None, logger=MalformedRequestLog(self.metrics))
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
        return web.Response(body=self.metrics.render().encode(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
