"""``diams-agent``: run the device agent, or provision a device at manufacture.

    diams-agent run --config /etc/diams-agent/agent.toml [--metrics-textfile FILE.prom]
    diams-agent status --config /etc/diams-agent/agent.toml [--json]
    diams-agent --json-logs run ...          # one JSON object a log line
    diams-agent provision --model M --serial S --mac AA:BB:CC:DD:EE:FF --firmware FILE --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from ..systemd import sd_notify
from .config import ConfigError, load_config
from .keystore import KeystoreError, load_secret
from .provision import provision

__all__ = ["main"]

log = logging.getLogger("diams.agent")


def _cmd_run(args: argparse.Namespace) -> int:
    from .mqtt import MqttAgent  # paho is only needed to run

    try:
        config = load_config(Path(args.config))
        secret = load_secret(config.key_file)
    except (ConfigError, KeystoreError) as exc:
        print(f"diams-agent: {exc}", file=sys.stderr)
        return 2

    def on_command(name: str, payload: bytes) -> None:
        log.info("command %s (%d bytes)", name, len(payload))

    from .observe import StatusWriter, status_path

    writer = StatusWriter(status_path(config.state_file), metrics_textfile=args.metrics_textfile,
                          interval_s=args.status_interval)
    agent = MqttAgent(config, secret, on_command=on_command, on_status=writer.update)

    def stop(signum: int, frame: FrameType | None) -> None:
        sd_notify("STOPPING=1")
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("diams-agent %s starting: broker %s:%d, gateways %s", config.device_id, config.broker_host,
             config.broker_port, ", ".join(config.gateways))
    sd_notify("READY=1")
    agent.run()
    writer.update(agent, force=True)
    log.info("stopped: %s", agent.snapshot().stats)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0: authenticated; 1: running, not authenticated; 3: no fresh status (not running);
    2: bad configuration."""
    import time

    from .observe import read_status, render_status, status_path

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(f"diams-agent: {exc}", file=sys.stderr)
        return 2
    path = status_path(config.state_file)
    try:
        status = read_status(path)
    except FileNotFoundError:
        print(f"diams-agent: no status file {path}: the agent has not run", file=sys.stderr)
        return 3
    except (OSError, ValueError) as exc:
        print(f"diams-agent: cannot read {path}: {exc}", file=sys.stderr)
        return 3
    text, code = render_status(status, now=time.time(), stale_after_s=args.stale_after)
    if args.json:
        print(json.dumps({**status, "fresh": code != 3}, indent=1))
    else:
        print(text)
    return code


def _cmd_provision(args: argparse.Namespace) -> int:
    try:
        done = provision(model=args.model, serial=args.serial, mac=args.mac, firmware=Path(args.firmware),
                         out=Path(args.out), gateways=tuple(args.gateway or ("gw-1",)))
    except (ValueError, OSError) as exc:
        print(f"diams-agent provision: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(done.record.__dict__, indent=2))
    print(f"secret (flash into the device, 0600): {done.key_file}", file=sys.stderr)
    print(f"owner bundle (hand over, 0600):       {done.owner_file}", file=sys.stderr)
    print(f"registration CSV row appended:        {done.csv_file}", file=sys.stderr)
    print(f"agent configuration:                  {done.config_file}", file=sys.stderr)
    return 0


def _cmd_device_key(args: argparse.Namespace) -> int:
    from .rekey import device_public_key

    try:
        config = load_config(Path(args.config))
        print(device_public_key(config.key_file, create=True).hex())
    except (ConfigError, KeystoreError, OSError) as exc:
        print(f"diams-agent device-key: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_rekey(args: argparse.Namespace) -> int:
    from device_agent.core.rekey import RekeyError

    from .rekey import run_rekey

    def write_line(text: str) -> None:
        print(text, flush=True)

    try:
        config = load_config(Path(args.config))
        run_rekey(config.key_file, config.device_id_bytes, sys.stdin.readline, write_line)
    except (ConfigError, KeystoreError, OSError) as exc:
        print(f"diams-agent rekey: {exc}", file=sys.stderr)
        return 2
    except RekeyError as exc:
        print(f"diams-agent rekey: refused ({exc.reason}); the device secret is unchanged", file=sys.stderr)
        return 1
    print("diams-agent rekey: new device secret committed", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diams-agent", description="DIAMS device agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--json-logs", action="store_true", help="structured logs (one JSON object a line)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="authenticate with the gateways and serve data and commands")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument("--metrics-textfile", type=Path,
                     help="also write Prometheus metrics here (node-exporter textfile collector, *.prom)")
    run.add_argument("--status-interval", type=float, default=5.0,
                     help="seconds between status writes when nothing changes (default 5)")
    run.set_defaults(func=_cmd_run)
    status = sub.add_parser("status", help="the running agent's session state, gateway, epoch, counters, "
                            "last refusal (from the status file it writes)")
    status.add_argument("--config", required=True, help="TOML configuration file (locates the status file)")
    status.add_argument("--json", action="store_true", help="the status file as JSON")
    status.add_argument("--stale-after", type=float, default=30.0,
                        help="a status older than this many seconds means the agent is not running (exit 3)")
    status.set_defaults(func=_cmd_status)
    prov = sub.add_parser("provision", help="create a device secret and its registration record")
    prov.add_argument("--model", required=True)
    prov.add_argument("--serial", required=True)
    prov.add_argument("--mac", required=True, help="AA:BB:CC:DD:EE:FF")
    prov.add_argument("--firmware", required=True, help="the firmware image (hashed with SHA-256)")
    prov.add_argument("--out", required=True, help="directory for the key, record, CSV and owner bundle")
    prov.add_argument("--gateway", action="append", help="gateway id for the generated config (repeatable)")
    prov.set_defaults(func=_cmd_provision)
    dkey = sub.add_parser("device-key", help="make (once) the device's X25519 key; print its public key")
    dkey.add_argument("--config", required=True, help="TOML configuration file")
    dkey.set_defaults(func=_cmd_device_key)
    rk = sub.add_parser("rekey", help="re-key with a new owner over stdin/stdout (hex lines)")
    rk.add_argument("--config", required=True, help="TOML configuration file")
    rk.set_defaults(func=_cmd_rekey)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    if args.json_logs:
        from .observe import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
