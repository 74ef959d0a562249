"""What an operator sees of a running agent: a status file, a Prometheus textfile, JSON log lines.

Strategy: the agent's loop calls ``StatusWriter.update(agent)`` after every turn; the writer builds a
small snapshot (session state, gateway, epoch, counter headroom, the last refusal and its reason,
the driver's counters) and writes it at most once per ``interval_s`` - and at once when the session
state, the gateway or the last refusal changes - as ``<state file>.status.json`` (temp file + rename:
a reader never sees half a file) and, if asked, as a Prometheus textfile for node-exporter's textfile
collector. ``diams-agent status`` reads that file: the agent needs no listening socket, and its
systemd hardening stays as it is. Nothing secret is in either file (ids, counters and reasons only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_COUNTER = 0xFFFFFFFF  # the OTP counter is a u32 (PROTOCOL.md section 4)

__all__ = ["JsonFormatter", "StatusWriter", "read_status", "render_metrics", "render_status", "status_path"]

SCHEMA = 1


def status_path(state_file: Path) -> Path:
    """The status file beside the agent's state file: ``state.json`` -> ``state.status.json``."""
    return state_file.with_name(state_file.stem + ".status.json")


def session_state(*, connected: bool, authenticated: bool, broker_refused: bool) -> str:
    if authenticated and connected:
        return "authenticated"
    if broker_refused:  # a session the gateway may already have dropped does not make it "authenticated"
        return "refused_by_broker"
    if authenticated:
        return "authenticated_offline"
    return "handshaking" if connected else "offline"


def snapshot(agent: Any, *, wall: Callable[[], float] = time.time) -> dict[str, Any]:
    """The status of an ``MqttAgent`` (read under its lock by the caller's thread: the agent's own)."""
    cfg, driver = agent.config, agent.driver
    now_mono, now = agent._clock(), wall()
    session = driver.session
    counters = {}
    policy = driver.policy
    for (gateway, epoch), reserved in sorted(policy.reserved.items()):
        nxt = policy.next.get((gateway, epoch), reserved + 1)
        headroom = MAX_COUNTER - nxt + 1
        counters[f"{gateway}/{epoch}"] = {"next": nxt, "reserved": reserved, "headroom": headroom}
    refusal = None
    candidates = [agent.last_refusal]
    if driver.last_refusal is not None:
        gw, why, at = driver.last_refusal
        candidates.append(("gateway", gw, why, at))
    latest = max((c for c in candidates if c is not None), key=lambda c: c[3], default=None)
    if latest is not None:
        by, who, reason, at = latest
        refusal = {"by": by, "gateway": who, "reason": reason, "at": round(now - (now_mono - at), 3)}
    return {
        "schema": SCHEMA,
        "device": cfg.device_id,
        "pid": os.getpid(),
        "updated": round(now, 3),
        "state": session_state(connected=agent._connected, authenticated=session is not None,
                               broker_refused=agent.broker_refused),
        "broker": f"{cfg.broker_host}:{cfg.broker_port}",
        "connected": agent._connected,
        "gateway": driver.session_gateway,
        "epoch": driver.epoch,
        "session_expires_in_s": None if session is None else round(session.expires - now_mono, 1),
        "counters": counters,
        "counter_headroom": min((c["headroom"] for c in counters.values()), default=MAX_COUNTER + 1),
        "last_refusal": refusal,
        "connects": agent.connects,
        "stats": dict(sorted(driver.all_stats().items())),
    }


def _write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


_STATES = ("authenticated", "authenticated_offline", "handshaking", "offline", "refused_by_broker")


def render_metrics(status: dict[str, Any]) -> str:
    """Prometheus text exposition format (node-exporter's textfile collector reads ``*.prom``)."""
    dev = status["device"]
    lines = [
        "# HELP diams_agent_session_state 1 for the agent's current session state.",
        "# TYPE diams_agent_session_state gauge",
    ]
    lines += [f'diams_agent_session_state{{device="{dev}",state="{s}"}} {int(status["state"] == s)}'
              for s in _STATES]
    lines += [
        "# HELP diams_agent_epoch The identity epoch the agent last authenticated under.",
        "# TYPE diams_agent_epoch gauge",
        f'diams_agent_epoch{{device="{dev}"}} {status["epoch"]}',
        "# HELP diams_agent_counter_headroom OTP counters left for the most used (gateway, epoch).",
        "# TYPE diams_agent_counter_headroom gauge",
        f'diams_agent_counter_headroom{{device="{dev}"}} {status["counter_headroom"]}',
        "# HELP diams_agent_broker_connects_total Successful broker connections.",
        "# TYPE diams_agent_broker_connects_total counter",
        f'diams_agent_broker_connects_total{{device="{dev}"}} {status["connects"]}',
        "# HELP diams_agent_events_total Agent events (handshakes, data, refusals, dropped commands).",
        "# TYPE diams_agent_events_total counter",
    ]
    lines += [f'diams_agent_events_total{{device="{dev}",event="{k}"}} {v}'
              for k, v in status["stats"].items()]
    lines += [
        "# HELP diams_agent_status_updated_seconds When this file was written (Unix time).",
        "# TYPE diams_agent_status_updated_seconds gauge",
        f'diams_agent_status_updated_seconds{{device="{dev}"}} {status["updated"]}',
    ]
    return "\n".join(lines) + "\n"


class StatusWriter:
    """Writes the status file (and the metrics textfile) from the agent's loop, throttled."""

    def __init__(self, path: Path, *, metrics_textfile: Path | None = None, interval_s: float = 5.0,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.metrics_textfile = metrics_textfile
        self.interval_s = interval_s
        self._wall = wall
        self._last_at = float("-inf")
        self._last_key: tuple[Any, ...] | None = None
        self.writes = 0

    def update(self, agent: Any, *, force: bool = False) -> None:
        with agent._lock:
            status = snapshot(agent, wall=self._wall)
        key = (status["state"], status["gateway"], status["epoch"], json.dumps(status["last_refusal"]))
        now = time.monotonic()
        if not force and key == self._last_key and now - self._last_at < self.interval_s:
            return
        self._last_key, self._last_at = key, now
        try:
            _write_atomic(self.path, json.dumps(status, indent=1) + "\n")
            if self.metrics_textfile is not None:
                _write_atomic(self.metrics_textfile, render_metrics(status), mode=0o644)
        except OSError as exc:  # a full disk must not stop the agent: say so once per interval
            logging.getLogger("diams.agent").warning("cannot write the status file: %s", exc.strerror)
            return
        self.writes += 1


def read_status(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not an agent status file (schema {SCHEMA})")
    return data


def render_status(status: dict[str, Any], *, now: float, stale_after_s: float) -> tuple[str, int]:
    """Human-readable status and the exit code of ``diams-agent status``: 0 authenticated, 1 not
    authenticated (running), 3 no fresh status (the agent is not running: LSB's "not running")."""
    age = now - float(status["updated"])
    fresh = age <= stale_after_s
    lines = [
        f"device          {status['device']}",
        f"state           {status['state']}" + ("" if fresh else f" (STALE: last written {age:.0f} s ago)"),
        f"broker          {status['broker']} ({'connected' if status['connected'] else 'not connected'})",
        f"gateway         {status['gateway'] or '-'}",
        f"epoch           {status['epoch']}",
    ]
    if status["session_expires_in_s"] is not None:
        lines.append(f"session ends in {status['session_expires_in_s']:.0f} s")
    for key, c in status["counters"].items():
        lines.append(f"counters        {key}: next {c['next']}, headroom {c['headroom']}")
    r = status["last_refusal"]
    if r:
        ago = now - float(r["at"])
        lines.append(f"last refusal    by {r['by']} {r['gateway'] or ''}: {r['reason']} ({ago:.0f} s ago)")
    else:
        lines.append("last refusal    none")
    stats = ", ".join(f"{k}={v}" for k, v in status["stats"].items())
    lines.append(f"events          {stats or '-'}")
    if not fresh:
        return "\n".join(lines), 3
    return "\n".join(lines), 0 if status["state"] == "authenticated" else 1


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)
