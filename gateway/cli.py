"""``diams-gateway``: run the daemon, make its keys, check its configuration, verify its audit log.

    diams-gateway run --config /etc/diams/gateway.toml
    diams-gateway keys --out /var/lib/diams-gateway     # X25519 key + broker password (0600 files)
    diams-gateway check-config --config gateway.toml
    diams-gateway audit verify /var/lib/diams-gateway/audit.log [--anchors [--config gateway.toml]]

Exit status: 0 ok, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.agent.observe import JsonFormatter  # one JSON log format for the agent and the gateway
from device_agent.private import KeystoreError, check_private, write_private

from .broker import UnsafeBroker
from .preflight import ConfigurationError
from .settings import GatewaySettings, SettingsError, load_settings

if TYPE_CHECKING:
    from .audit import AnchorCheck

log = logging.getLogger("diams.gateway")


def _setup_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


async def _run(config: Path | None) -> int:
    from .service import Gateway

    settings = load_settings(config)
    loop = asyncio.get_running_loop()
    async with Gateway(settings) as gw:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        await gw.serve(ready=lambda: log.info("gateway %s ready", settings.gateway_id))
    log.info("gateway %s stopped", settings.gateway_id)
    return 0


def _write_secret(path: Path, data: bytes) -> None:
    write_private(path, data, exclusive=True)


def _keys(out: Path) -> int:
    from ledger_bridge.sealing import generate_gateway_key

    out.mkdir(parents=True, exist_ok=True)
    pub = generate_gateway_key(out / "gateway.key")
    _write_secret(out / "broker.password", secrets.token_urlsafe(24).encode())
    print(
        json.dumps(
            {
                "x25519_public_key": pub.hex(),
                "key_file": str(out / "gateway.key"),
                "broker_password_file": str(out / "broker.password"),
            },
            indent=1,
        )
    )
    return 0


def _audit_verify(path: Path, anchors: bool, config: Path | None) -> int:
    from .audit import AuditError, verify_file

    try:
        count, head = verify_file(path)
    except (AuditError, OSError) as exc:
        print(f"audit log NOT valid: {exc}", file=sys.stderr)
        return 1
    print(f"audit log valid: {count} records, head {head}")
    if not anchors:
        return 0
    checks = asyncio.run(_check_anchors(path, config))
    last = 0
    for c in checks:
        where = " on chain" if c.on_chain else ""
        verdict = f"MISMATCH: {c.problem}" if c.problem else f"ok{where}"
        print(f"anchor {c.first_seq}..{c.last_seq} root {c.root} tx {c.tx}: {verdict}")
        last = max(last, c.last_seq)
    bad = sum(1 for c in checks if c.problem)
    scope = "on chain" if config is not None else "the local anchor records (add --config to check the chain)"
    print(f"{len(checks) - bad} of {len(checks)} anchors match {scope}")
    print(f"{count - last} records not anchored yet")
    return 1 if bad else 0


async def _check_anchors(path: Path, config: Path | None) -> list[AnchorCheck]:
    from .audit import check_anchors

    if config is None:
        return await check_anchors(path)
    from ledger_bridge.index import onchain_gateway_id

    from .ledger_link import build_ledger

    settings = load_settings(config)
    async with build_ledger(settings.ledger) as ledger:
        return await check_anchors(path, ledger, gateway_id=onchain_gateway_id(settings.gateway_id_bytes))


def _secret_file_problems(settings: GatewaySettings) -> list[str]:
    """The secret files named by the settings that are missing, unreadable, or readable by others."""
    named = {
        "key_file": settings.key_file,
        "broker.password_file": settings.broker.password_file,
        "ledger.keystore": settings.ledger.keystore,
        "ledger.passphrase_file": settings.ledger.passphrase_file,
        "enforcement.management_password_file": settings.enforcement.management_password_file,
    }
    problems = []
    for name, path in named.items():
        if path is None:
            continue
        try:
            check_private(path, "file")
            with open(path, "rb"):
                pass
        except KeystoreError as exc:
            problems.append(f"{name}: {exc}")
        except OSError as exc:
            problems.append(f"{name}: cannot read {path} ({exc.strerror})")
    return problems


def _check_config(config: Path | None, offline: bool = False) -> int:
    """A real preflight: the settings, every secret file opened as ``run`` opens it (the keystore with
    its passphrase), key lengths and addresses, then the ledger reached and this gateway's registration
    (id, key and account) confirmed. Exit 2 for a configuration problem, 1 when the ledger is down."""
    from .preflight import LedgerUnreachable, check_ledger, check_static

    settings = load_settings(config)
    problems = _secret_file_problems(settings)
    for problem in problems:
        print(f"diams-gateway: configuration error: {problem}", file=sys.stderr)
    if problems:
        return 2
    key, signer = check_static(settings)
    if offline:  # at install time, before the ledger is reachable
        print(f"configuration ok (offline: the ledger was not asked): gateway {settings.gateway_id}")
        return 0
    try:
        registration = asyncio.run(check_ledger(settings, key, signer))
    except LedgerUnreachable as exc:
        print(f"diams-gateway: {exc}", file=sys.stderr)
        return 1
    print(
        f"configuration ok: gateway {settings.gateway_id} {registration}, broker {settings.broker.host}:"
        f"{settings.broker.port}, ledger {settings.ledger.mode}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diams-gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("DIAMS_LOG_LEVEL", "info"))
    parser.add_argument("--json-logs", action="store_true", help="structured logs (one JSON object a line)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path)
    check = sub.add_parser("check-config", help="validate the configuration and its secret files")
    check.add_argument("--config", type=Path)
    check.add_argument(
        "--offline", action="store_true", help="settings, secret files, keys and addresses only: no ledger"
    )
    keys = sub.add_parser("keys", help="create the gateway's X25519 key and broker password")
    keys.add_argument("--out", type=Path, required=True)
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain (and the local anchor records)")
    verify.add_argument("path", type=Path)
    verify.add_argument("--anchors", action="store_true", help="recompute every anchored Merkle root")
    verify.add_argument("--config", type=Path, help="with --anchors: find the roots on this gateway's ledger")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.json_logs)
    try:
        if args.command == "run":
            return asyncio.run(_run(args.config))
        if args.command == "check-config":
            return _check_config(args.config, args.offline)
        if args.command == "keys":
            return _keys(args.out)
        return _audit_verify(args.path, args.anchors, args.config)
    except (SettingsError, ConfigurationError, UnsafeBroker) as exc:
        print(f"diams-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"diams-gateway: refusing to overwrite {exc.filename}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("diams-gateway: failed")  # with its traceback: not a configuration error
        return 1


if __name__ == "__main__":
    sys.exit(main())
