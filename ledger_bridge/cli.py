"""`diams-ledger`: every actor's command line to a channel.

    diams-ledger keys create --out owner.json
    diams-ledger --rpc http://127.0.0.1:8545 deploy --keystore admin.json --out channel.json
    diams-ledger --rpc URL --channel channel.json register --keystore mfr.json --csv devices.csv
    diams-ledger --rpc URL --channel channel.json show device 0xd100000000000001

Passphrases come from $DIAMS_PASSPHRASE, --passphrase-file, or a prompt; never from the command line.
Backends: --rpc URL (any EVM node), --embedded PATH (the durable in-process chain), --eth-tester (in memory,
gone when the command exits: for trying commands out).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from .actor import ActorHandle
from .backends import EthereumTesterBackend, LedgerBackend, RpcBackend
from .csv_import import parse_bytes32, parse_device_id, read_rows, register_rows
from .errors import LedgerError
from .keystore import DEFAULT_SCRYPT_N, Signer, check_private_file, create_keystore, load_signer
from .ledger import Ledger
from .model import Channel, DeviceRegistration, Role, TxOutcome

PASSPHRASE_ENV = "DIAMS_PASSPHRASE"  # noqa: S105 - the name of the variable, not a secret


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = args.handler
        result = asyncio.run(handler(args)) if asyncio.iscoroutinefunction(handler) else handler(args)
        return int(result)
    except (LedgerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---- configuration ----
def _backend(args: argparse.Namespace) -> LedgerBackend:
    if args.rpc:
        return RpcBackend(url=args.rpc)
    if args.embedded:
        from .embedded import EmbeddedBackend  # the durable in-process chain; no Node needed

        return EmbeddedBackend(Path(args.embedded))
    if args.eth_tester:
        return EthereumTesterBackend()
    raise ValueError("choose a backend: --rpc URL, --embedded PATH or --eth-tester")


def _channel(args: argparse.Namespace) -> Channel:
    if not args.channel:
        raise ValueError("--channel FILE is required (written by `deploy --out`)")
    raw = json.loads(Path(args.channel).read_text("utf-8"))
    return Channel(
        registry=raw["registry"], auth_log=raw["auth_log"], deployed_block=int(raw.get("deployed_block", 0))
    )


def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    if getattr(args, "passphrase_file", None):
        check_private_file(Path(args.passphrase_file), "passphrase file")
        return Path(args.passphrase_file).read_text("utf-8").rstrip("\n")
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    first = getpass.getpass("keystore passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ValueError("passphrases differ")
    return first


def _signer(args: argparse.Namespace) -> Signer:
    if not args.keystore:
        raise ValueError("--keystore FILE is required for this command")
    return load_signer(Path(args.keystore), _passphrase(args))


# ---- commands ----
def cmd_keys_create(args: argparse.Namespace) -> int:
    signer = create_keystore(
        Path(args.out), _passphrase(args, confirm=True), label=args.label, scrypt_n=args.scrypt_n
    )
    print(signer.address)
    return 0


async def cmd_deploy(args: argparse.Namespace) -> int:
    admin = _signer(args)
    async with Ledger(backend=_backend(args)) as ledger:
        channel = await ledger.deploy(admin=admin)
    text = json.dumps(
        {
            "registry": channel.registry,
            "auth_log": channel.auth_log,
            "deployed_block": channel.deployed_block,
        },
        indent=2,
    )
    if args.out:
        Path(args.out).write_text(text + "\n", "utf-8")
    print(text)
    return 0


async def cmd_fund(args: argparse.Namespace) -> int:
    async with Ledger(backend=_backend(args)) as ledger:
        await ledger.fund(args.address, int(args.ether * 10**18))
    print(f"funded {args.address} with {args.ether} ether")
    return 0


async def _with_actor(
    args: argparse.Namespace, action: Callable[[ActorHandle, Ledger], Awaitable[TxOutcome]]
) -> int:
    """Run one transaction as the keystore's actor and print its outcome."""
    signer = _signer(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        outcome = await action(ledger.actor(signer), ledger)
    print(f"ok: tx {outcome.transaction_hash} in block {outcome.block_number}, gas {outcome.gas_used}")
    return 0


async def cmd_register(args: argparse.Namespace) -> int:
    if args.csv:
        return await _register_csv(args)
    reg = DeviceRegistration(
        device_id=parse_device_id(args.id),
        model=parse_bytes32(args.model, name="model", allow_text=True),
        firmware_hash=parse_bytes32(args.firmware_hash, name="firmware_hash"),
        characteristics=parse_bytes32(args.characteristics, name="characteristics"),
        claim_hash=parse_bytes32(args.claim_hash, name="claim_hash"),
    )
    return await _with_actor(args, lambda a, _: a.register_device(reg))


async def _register_csv(args: argparse.Namespace) -> int:
    good, bad = read_rows(Path(args.csv))
    signer = _signer(args)
    bar = Progress(
        TextColumn("registering"), BarColumn(), MofNCompleteColumn(),
        console=Console(stderr=True), disable=not sys.stderr.isatty() or args.quiet,
    )  # fmt: skip
    task = bar.add_task("registering", total=len(good))

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
            report = await register_rows(
                ledger.actor(signer), good, batch_size=args.batch_size, progress=progress
            )
    errors = sorted(bad + report.errors, key=lambda e: e.line)
    for e in errors:
        print(f"line {e.line}: {e.device_id or '?'}: {e.reason}")
    print(
        f"registered {report.registered} devices in {report.transactions} transactions; "
        f"{len(errors)} rows failed"
    )
    return 1 if errors else 0


async def cmd_show_device(args: argparse.Namespace) -> int:
    dev = parse_device_id(args.device_id)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        record = await ledger.device(dev)
        history = await ledger.history(dev)
        gateway_ids = dict.fromkeys(e.args["gatewayId"] for e in history if e.name == "GatewayAuthorized")
        grants = [await ledger.grant(dev, gw) for gw in gateway_ids if isinstance(gw, bytes)]
    if args.json:
        print(
            json.dumps(
                {
                    "device": _jsonable(record.__dict__),
                    "history": [
                        {
                            "event": e.name,
                            "block": e.block_number,
                            "tx": e.transaction_hash,
                            "args": _jsonable(dict(e.args)),
                        }
                        for e in history
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"device        0x{dev.hex()}")
    print(f"state         {record.state.label} (epoch {record.epoch})")
    print(f"manufacturer  {record.manufacturer}")
    print(f"owner         {record.owner}")
    if record.pending_owner != "0x" + "00" * 20:
        print(f"pending owner {record.pending_owner}")
    model = record.model.rstrip(b"\0").decode("utf-8", "replace")
    print(f"model         {model}")
    print(f"firmware      0x{record.firmware_hash.hex()}")
    print(f"policy        0x{record.policy_id.hex()}")
    for g in grants:
        status = "current" if g.current else "stale or withdrawn"
        print(f"gateway       0x{g.gateway_id.hex()}: sealed key for epoch {g.epoch}, {status}")
    print("history:")
    for e in history:
        details = ", ".join(f"{k}={_short(v)}" for k, v in e.args.items() if k != "id")
        print(f"  block {e.block_number:>6}  {e.name:<22} {details}")
    return 0


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + (value.hex() if len(value) <= 32 else value[:8].hex() + f"..({len(value)} bytes)")
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "label"):
        return value.label
    return value


async def cmd_verify_anchor(args: argparse.Namespace) -> int:
    root = parse_bytes32(args.root, name="root")
    gateway_id = parse_bytes32(args.gateway_id, name="gateway", allow_text=True)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        anchor = await ledger.anchor(root, gateway_id=gateway_id)  # anchors are keyed by (gateway, root)
    print(
        f"anchored by gateway 0x{anchor.gateway_id.hex()} in block {anchor.block_number} "
        f"(time {anchor.timestamp})"
    )
    print(f"{anchor.count} records, sequence {anchor.first_seq}..{anchor.last_seq}")
    mismatches = []
    if args.count is not None and args.count != anchor.count:
        mismatches.append(f"count differs (expected {args.count})")
    for m in mismatches:
        print(f"MISMATCH: {m}")
    print("verified" if not mismatches else "NOT verified")
    return 1 if mismatches else 0


def _device_command(method: str, *extra: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """A command that calls `ActorHandle.<method>(device_id, *extra args)`."""

    async def run(args: argparse.Namespace) -> int:
        dev = parse_device_id(args.device_id)
        values = [_convert(name, getattr(args, name)) for name in extra]
        return await _with_actor(args, lambda a, _: getattr(a, method)(dev, *values))

    return run


def _convert(name: str, value: str) -> Any:
    if name in ("gateway_id", "policy_id", "firmware_hash"):
        return parse_bytes32(value, name=name, allow_text=name != "firmware_hash")
    if name == "claim_code":  # a file or stdin, never argv (visible to every user in ps)
        if value == "-":
            text = sys.stdin.readline()
        else:
            check_private_file(Path(value), "claim code file")
            text = Path(value).read_text("utf-8")
        code = text.rstrip("\r\n").encode()
        if not code:
            raise ValueError("the claim code is empty")
        return code
    return value


async def cmd_authorize(args: argparse.Namespace) -> int:
    dev, gw = (
        parse_device_id(args.device_id),
        parse_bytes32(args.gateway_id, name="gateway_id", allow_text=True),
    )
    sealed = bytes.fromhex(args.sealed_key.removeprefix("0x"))
    commitment = parse_bytes32(args.commitment, name="commitment")
    return await _with_actor(
        args, lambda a, _: a.authorize_gateway(dev, gw, sealed_key=sealed, key_commitment=commitment)
    )


async def cmd_register_gateway(args: argparse.Namespace) -> int:
    gw = parse_bytes32(args.gateway_id, name="gateway_id", allow_text=True)
    pub = parse_bytes32(args.x25519, name="x25519")
    return await _with_actor(
        args, lambda a, _: a.register_gateway(gw, x25519_public_key=pub, account=args.account)
    )


async def cmd_grant_role(args: argparse.Namespace) -> int:
    role = Role[args.role.upper()]
    return await _with_actor(args, lambda a, _: a.grant_role(role, args.account))


async def cmd_node(args: argparse.Namespace) -> int:
    from .node import serve

    return await serve(args)


def _add_node_arguments(parser: argparse.ArgumentParser) -> None:
    from .node import add_arguments

    add_arguments(parser)


# ---- parser ----
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diams-ledger", description="DIAMS identities on an EVM ledger")
    backend = p.add_mutually_exclusive_group()
    backend.add_argument("--rpc", metavar="URL", help="JSON-RPC endpoint of an EVM node (http/https)")
    backend.add_argument("--embedded", metavar="PATH", help="durable in-process chain stored at PATH")
    backend.add_argument("--eth-tester", action="store_true", help="in-memory chain, gone at exit")
    p.add_argument("--channel", metavar="FILE", help="channel addresses, as written by `deploy --out`")
    p.add_argument("--keystore", metavar="FILE", help="the acting actor's encrypted key")
    p.add_argument("--passphrase-file", metavar="FILE", help=f"else ${PASSPHRASE_ENV}, else a prompt")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="actor keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an encrypted keystore file")
    create.add_argument("--out", required=True)
    create.add_argument("--label", default="")
    create.add_argument("--scrypt-n", type=int, default=DEFAULT_SCRYPT_N, help=argparse.SUPPRESS)
    create.set_defaults(handler=cmd_keys_create)

    node = sub.add_parser("node", help="serve an embedded chain file over JSON-RPC (one process owns it)")
    _add_node_arguments(node)
    node.set_defaults(handler=cmd_node)

    deploy = sub.add_parser("deploy", help="deploy a new channel; the keystore's account becomes its admin")
    deploy.add_argument("--out", help="write the channel file here")
    deploy.set_defaults(handler=cmd_deploy)

    fund = sub.add_parser("fund", help="give an account ether (development chains only)")
    fund.add_argument("address")
    fund.add_argument("--ether", type=float, default=10.0)
    fund.set_defaults(handler=cmd_fund)

    grant = sub.add_parser("grant-role", help="admin: grant manufacturer, maintainer, operator or admin")
    grant.add_argument("role", choices=[r.name.lower() for r in Role])
    grant.add_argument("account")
    grant.set_defaults(handler=cmd_grant_role)

    reg = sub.add_parser("register", help="manufacturer: register one device, or many from --csv")
    reg.add_argument("--csv", help="CSV of devices (see ledger_bridge/csv_import.py for columns)")
    reg.add_argument("--batch-size", type=int, default=200)
    reg.add_argument("--quiet", action="store_true", help="no progress bar")
    for name in ("--id", "--model", "--firmware-hash", "--characteristics", "--claim-hash"):
        reg.add_argument(name)
    reg.set_defaults(handler=cmd_register)

    simple: list[tuple[str, str, tuple[str, ...], str]] = [
        ("claim", "claim", ("claim_code",), "prove possession with the claim code; you become the owner"),
        ("activate", "activate", (), "owner: Claimed/Suspended -> Active"),
        ("suspend", "suspend", (), "owner or admin: Active -> Suspended"),
        ("transfer", "transfer", ("new_owner",), "owner: offer the device to a new owner (epoch + 1)"),
        ("accept-transfer", "accept_transfer", (), "new owner: accept a transfer"),
        ("cancel-transfer", "cancel_transfer", (), "owner: withdraw a transfer offer"),
        ("revoke", "revoke", (), "owner or admin: revoke for good"),
        ("decommission", "decommission", (), "owner: retire for good"),
        (
            "approve-maintainer",
            "approve_maintainer",
            ("maintainer",),
            "owner: let a maintainer record firmware",
        ),
        (
            "record-firmware",
            "record_firmware",
            ("firmware_hash",),
            "maintainer: new firmware hash (epoch + 1)",
        ),
        (
            "deauthorize-gateway",
            "deauthorize_gateway",
            ("gateway_id",),
            "owner: withdraw a gateway (epoch + 1)",
        ),
        ("set-policy", "set_policy", ("policy_id",), "owner: attach an access policy"),
    ]
    for command, method, extra, helptext in simple:
        sp = sub.add_parser(command, help=helptext)
        sp.add_argument("device_id")
        for name in extra:
            if name == "claim_code":
                sp.add_argument(
                    "--code-file", dest="claim_code", required=True, metavar="FILE",
                    help="file holding the claim code (0600), or - for standard input; never argv",
                )
            else:
                sp.add_argument(name)
        sp.set_defaults(handler=_device_command(method, *extra))

    auth = sub.add_parser("authorize-gateway", help="owner: publish a gateway's sealed key for a device")
    auth.add_argument("device_id")
    auth.add_argument("gateway_id")
    auth.add_argument("--sealed-key", required=True, help="hex, as sealed by ledger_bridge.sealing")
    auth.add_argument("--commitment", required=True)
    auth.set_defaults(handler=cmd_authorize)

    rgw = sub.add_parser("register-gateway", help="operator: register a gateway")
    rgw.add_argument("gateway_id")
    rgw.add_argument("--x25519", required=True, help="the gateway's X25519 public key, 0x + 64 hex")
    rgw.add_argument("--account", required=True, help="the gateway's own account (anchors, clone alerts)")
    rgw.set_defaults(handler=cmd_register_gateway)

    show = sub.add_parser("show", help="read records").add_subparsers(dest="show_command", required=True)
    sdev = show.add_parser("device", help="a device, its state and its history")
    sdev.add_argument("device_id")
    sdev.add_argument("--json", action="store_true")
    sdev.set_defaults(handler=cmd_show_device)

    va = sub.add_parser("verify-anchor", help="check that a Merkle root of authentications is anchored")
    va.add_argument("root")
    va.add_argument(
        "--gateway-id", required=True, help="the gateway that anchored it (anchors are per gateway)"
    )
    va.add_argument("--count", type=int)
    va.set_defaults(handler=cmd_verify_anchor)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
