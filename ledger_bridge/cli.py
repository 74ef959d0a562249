"""`diams-ledger`: every actor's command line to a channel.

    diams-ledger keys create --out owner.json
    diams-ledger --rpc http://127.0.0.1:8545 deploy --keystore admin.json --out channel.json
    diams-ledger --rpc URL --channel channel.json register --keystore mfr.json --csv devices.csv
    diams-ledger --rpc URL --channel channel.json show device 0xd100000000000001
    diams-ledger ... --keystore owner.json onboard --csv devices.csv --policy sensors --gateway gw-1

Human-readable output by default; `--json` (before or after the command) prints JSON instead. The
workflows themselves live in ledger_bridge/operations.py, shared with `diams-console`.

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
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from device_agent.private import check_private

from . import operations as ops
from .actor import ActorHandle
from .backends import EthereumTesterBackend, LedgerBackend, RpcBackend
from .csv_import import parse_bytes32, parse_device_id, read_rows, register_rows
from .errors import KeystoreError, LedgerError
from .keystore import DEFAULT_SCRYPT_N, Signer, create_keystore, load_signer
from .ledger import Ledger
from .model import Channel, DeviceRegistration, DeviceState, Role, TxOutcome

PASSPHRASE_ENV = "DIAMS_PASSPHRASE"  # noqa: S105 - the name of the variable, not a secret


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = args.handler
        result = handler(args)
        if isinstance(result, Awaitable):
            result = asyncio.run(_awaited(result))
        return int(result)
    except (LedgerError, KeystoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _awaited(result: Awaitable[int]) -> int:
    return await result


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """Print `text`, or `value` as JSON with --json."""
    if getattr(args, "json", False):
        print(json.dumps(ops.jsonable(value), indent=2))
    else:
        print(text)


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
        check_private(Path(args.passphrase_file), "passphrase file")
        return Path(args.passphrase_file).read_text("utf-8").rstrip("\n")
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise ValueError(
            f"no passphrase: set ${PASSPHRASE_ENV} or give --passphrase-file (no terminal to prompt on)"
        )
    try:
        first = getpass.getpass("keystore passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise ValueError("passphrases differ")
    except EOFError:
        raise ValueError("no passphrase given (end of input)") from None
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
    _emit(args, outcome, _tx_text(outcome))
    return 0


def _tx_text(outcome: TxOutcome) -> str:
    return f"ok: tx {outcome.transaction_hash} in block {outcome.block_number}, gas {outcome.gas_used}"


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
    bar = _progress_bar(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        report = await register_rows(
            ledger.actor(signer),
            good,
            batch_size=args.batch_size,
            progress=lambda d, t: bar("registering", d, t),
        )
    bar.done()
    errors = sorted(bad + report.errors, key=lambda e: e.line)
    lines = [f"line {e.line}: {e.device_id or '?'}: {e.reason}" for e in errors]
    lines.append(
        f"registered {report.registered} devices in {report.transactions} transactions; "
        f"{len(errors)} rows failed"
    )
    _emit(
        args,
        {"registered": report.registered, "transactions": report.transactions, "errors": errors},
        "\n".join(lines),
    )
    return 1 if errors else 0


class _Bar:
    """A progress bar on stderr (rich), shown only on a terminal: never mixed into stdout."""

    def __init__(self, show: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
            console=Console(stderr=True), disable=not show,
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}
        self._started = False

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        task = self._tasks.get(what)
        if task is None:
            task = self._tasks[what] = self._progress.add_task(what, total=total)
        self._progress.update(task, completed=done, total=total)

    def done(self) -> None:
        if self._started:
            self._progress.stop()


def _progress_bar(args: argparse.Namespace) -> _Bar:
    return _Bar(sys.stderr.isatty() and not getattr(args, "quiet", False))


def _audit_logs(args: argparse.Namespace) -> list[Path]:
    return [Path(p) for p in (getattr(args, "audit_log", None) or [])]


async def cmd_show_device(args: argparse.Namespace) -> int:
    dev = parse_device_id(args.device_id)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        detail = await ops.device_detail(ledger, dev)
    auths = ops.authentications(_audit_logs(args), dev, limit=args.limit)
    record = detail.record
    if getattr(args, "json", False):
        print(
            json.dumps(
                ops.jsonable(
                    {
                        "device": record,
                        "policy": detail.policy_name,
                        "policy_id": record.policy_id,
                        "grants": detail.grants,
                        "removed_gateways": sorted(ops.id_text(g) for g in detail.removed_gateways),
                        "clone_alerts": detail.clone_alerts,
                        "rekey": None if detail.rekey is None else {
                            "pending": True, "carried_by": detail.rekey.carrier_name
                        },
                        "history": [
                            {
                                "event": t.event,
                                "block": t.block,
                                "time": t.time,
                                "tx": t.tx,
                                "args": t.details,
                            }
                            for t in detail.timeline
                        ],
                        "authentications": auths,
                    }
                ),
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
    print(f"model         {ops.id_text(record.model)}")
    print(f"firmware      0x{record.firmware_hash.hex()}")
    print(f"commitment    0x{record.characteristics.hex()}")
    print(f"policy        {detail.policy_name or '(none: the gateway drops all its data)'}")
    for g in detail.grants:
        status = detail.grant_text(g)
        print(f"gateway       {ops.id_text(g.gateway_id)}: sealed key for epoch {g.epoch}, {status}")
    if detail.rekey is not None:
        print(f"re-key        {detail.rekey.text()}")
    if detail.clone_alerts:
        print(f"clone alerts  {detail.clone_alerts}: after checking the device, `diams-ledger recover`")
    print("history:")
    for t in detail.timeline:
        details = ", ".join(f"{k}={_short(v)}" for k, v in t.details.items())
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.time))
        print(f"  block {t.block:>6}  {when}  {t.event:<22} {details}  tx {t.tx}")
    if args.audit_log:
        print(f"authentications (latest {args.limit}, from {len(args.audit_log)} audit log(s)):")
        for a in auths:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(a.get("ts", 0))))
            extra = f" ({a['reason']})" if a.get("reason") else ""
            print(f"  {when}  {a['event']}{extra}  seq {a.get('seq')} in {a['log']}")
    return 0


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + (value.hex() if len(value) <= 32 else value[:8].hex() + f"..({len(value)} bytes)")
    return str(value)


async def cmd_show_gateway(args: argparse.Namespace) -> int:
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        info = await ops.gateway_info(ledger, args.gateway)
    _emit(args, {**ops.jsonable(info), "consequences": info.consequences}, info.text())
    return 0


async def cmd_show_policy(args: argparse.Namespace) -> int:
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        record = await ops.policy_info(ledger, args.policy)
        name = ops.policy_label(await ledger.policy_name(record.policy_id), record.policy_id)
    _emit(args, {**ops.jsonable(record), "name": name}, ops.policy_text(record, name))
    return 0


async def cmd_define_policy(args: argparse.Namespace) -> int:
    publish = [s.strip() for s in args.publish.split(",") if s.strip()]
    subscribe = [s.strip() for s in args.subscribe.split(",") if s.strip()]
    return await _with_actor(
        args, lambda a, _: ops.define_policy(a, args.policy, publish=publish, subscribe=subscribe)
    )


async def cmd_list_devices(args: argparse.Namespace) -> int:
    from .index import IdentityIndex, LedgerSource

    state = None
    if args.state:
        matches = [s for s in DeviceState if s.label.lower() == args.state.lower()]
        if not matches:
            raise ValueError(
                f"unknown state {args.state!r}: one of {', '.join(s.label for s in DeviceState)}"
            )
        state = matches[0]
    channel = _channel(args)
    index = IdentityIndex(
        Path(args.index) if args.index else Path(":memory:"), start_block=channel.deployed_block
    )
    gateway = None
    try:
        async with Ledger(backend=_backend(args), channel=channel) as ledger:
            if args.gateway:  # a name never registered is an error; a removed gateway serves nobody
                gateway = await ops.gateway_info(ledger, args.gateway, history=False)
            while True:  # catch up with the chain (an --index file only reads what is new)
                report = await index.sync(LedgerSource(ledger))
                if report.to_block >= await ledger.block_number():
                    break
        total, rows = index.search(
            state=state,
            owner=args.owner,
            gateway=None if not args.gateway else ops.name_id(args.gateway, what="gateway"),
            prefix=args.prefix or "",
            offset=args.offset,
            limit=args.limit,
        )
    finally:
        index.close()
    lines = [
        f"{'device':<18} {'state':<14} {'epoch':>5}  {'policy':<16} owner",
        *(
            f"{r['device_id']:<18} {r['state']:<14} {r['epoch']:>5}  "
            f"{ops.policy_label(r['policy_name'], r['policy']) or '-':<16} {r['owner'] or '-'}"
            for r in rows
        ),
        f"{len(rows)} shown of {total} matching (offset {args.offset})",
    ]
    value: dict[str, Any] = {"total": total, "offset": args.offset, "devices": rows}
    if gateway is not None and gateway.removed:
        value["gateway_removed"] = f"gateway {gateway.name} was {gateway.removal_text()}"
        see = f"`diams-ledger show gateway {gateway.name}`"
        lines.append(f"{value['gateway_removed']}: it may authenticate no device ({see})")
    _emit(args, value, "\n".join(lines))
    return 0


async def cmd_verify_anchor(args: argparse.Namespace) -> int:
    root = parse_bytes32(args.root, name="root")
    gateway_id = parse_bytes32(args.gateway_id, name="gateway", allow_text=True)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        anchor = await ledger.anchor(root, gateway_id=gateway_id)  # anchors are keyed by (gateway, root)
    mismatches = []
    if args.count is not None and args.count != anchor.count:
        mismatches.append(f"count differs (expected {args.count})")
    lines = [
        f"anchored by gateway {ops.id_text(anchor.gateway_id)} in block {anchor.block_number} "
        f"(time {anchor.timestamp})",
        f"{anchor.count} records, sequence {anchor.first_seq}..{anchor.last_seq}",
        *(f"MISMATCH: {m}" for m in mismatches),
        "verified" if not mismatches else "NOT verified",
    ]
    _emit(args, {"anchor": anchor, "mismatches": mismatches, "verified": not mismatches}, "\n".join(lines))
    return 1 if mismatches else 0


def _action_command(action: ops.Action) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        dev = parse_device_id(args.device_id)
        params = {p: getattr(args, p) for p in action.params}
        if "claim_code" in params:  # a file or stdin, never argv (visible to every user in ps)
            params["claim_code"] = _claim_code_text(params["claim_code"])
        return await _with_actor(args, lambda a, _: ops.run_action(a, action.name, dev, params))

    return run


def _claim_code_text(source: str, what: str = "claim code") -> str:
    """A secret from a 0600 file or standard input ("-"), never argv."""
    if source == "-":
        text = sys.stdin.readline()
    else:
        check_private(Path(source), f"{what} file")
        text = Path(source).read_text("utf-8")
    code = text.rstrip("\r\n")
    if not code:
        raise ValueError(f"the {what} is empty")
    return code


async def cmd_authorize(args: argparse.Namespace) -> int:
    dev = parse_device_id(args.device_id)
    if args.bundle:
        bundle = ops.OwnerBundle.load(Path(args.bundle))
        if bundle.device_id != dev:
            raise ValueError(f"{Path(args.bundle).name} is the bundle of device 0x{bundle.device_id.hex()}")
        return await _with_actor(args, lambda a, led: ops.authorize_from_bundle(led, a, bundle, args.gateway))
    if not (args.sealed_key and args.commitment):
        raise ValueError("give --bundle (the device's owner bundle), or both --sealed-key and --commitment")
    sealed = bytes.fromhex(args.sealed_key.removeprefix("0x"))
    commitment = parse_bytes32(args.commitment, name="commitment")
    return await _on_live_gateway(
        args, lambda a, gw: a.authorize_gateway(dev, gw, sealed_key=sealed, key_commitment=commitment)
    )


async def cmd_recover(args: argparse.Namespace) -> int:
    dev = parse_device_id(args.device_id)
    signer = _signer(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        outcomes = await ops.recover_after_clone(ledger, ledger.actor(signer), dev)
    _emit(args, outcomes, "\n".join(_tx_text(o) for o in outcomes) + f"\nrecovered: 0x{dev.hex()} is Active")
    return 0


async def cmd_onboard(args: argparse.Namespace) -> int:
    rows, bad = ops.read_onboard_csv(
        Path(args.csv), bundle_dir=Path(args.bundle_dir) if args.bundle_dir else None
    )
    signer = _signer(args)
    bar = _progress_bar(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        report = await ops.onboard_rows(
            ledger,
            ledger.actor(signer),
            rows,
            policy=args.policy,
            gateways=args.gateway or (),
            batch_size=args.batch_size,
            progress=bar,
        )
    bar.done()
    errors = sorted([*bad, *report.errors], key=lambda e: e.line)
    lines = [f"line {e.line}: {e.device_id or '?'}: {e.reason}" for e in errors]
    gws = (
        f", authorized {report.authorized} device keys for {', '.join(args.gateway)}" if args.gateway else ""
    )
    lines.append(
        f"onboarded {len(report.onboarded)} devices (claimed, policy {args.policy}, active){gws} "
        f"in {report.transactions} transactions; {len(errors)} rows failed"
    )
    _emit(
        args,
        {
            "onboarded": report.onboarded,
            "authorized": report.authorized,
            "transactions": report.transactions,
            "errors": errors,
        },
        "\n".join(lines),
    )
    return 1 if errors else 0


async def cmd_register_gateway(args: argparse.Namespace) -> int:
    pub = parse_bytes32(args.x25519 if args.x25519.startswith("0x") else "0x" + args.x25519, name="x25519")
    name, account = args.gateway, args.account
    return await _with_actor(
        args, lambda a, led: ops.register_gateway(led, a, name, x25519_public_key=pub, account=account)
    )


def _x25519(text: str) -> bytes:
    return parse_bytes32(text if text.startswith("0x") else "0x" + text, name="x25519")


async def _on_live_gateway(
    args: argparse.Namespace, action: Callable[[ActorHandle, bytes], Awaitable[TxOutcome]]
) -> int:
    """One transaction on gateway ``args.gateway``, refused in words before anything is sent when the
    name was never registered or the gateway was removed (when, by whom), where the chain would only
    revert with UnknownGateway ("not registered", even for a removed one)."""

    async def checked(actor: ActorHandle, ledger: Ledger) -> TxOutcome:
        return await action(actor, (await ops.live_gateway(ledger, args.gateway)).gateway_id)

    return await _with_actor(args, checked)


async def cmd_rotate_gateway_key(args: argparse.Namespace) -> int:
    pub = _x25519(args.x25519)
    return await _on_live_gateway(args, lambda a, gw: a.rotate_gateway_key(gw, x25519_public_key=pub))


async def cmd_change_gateway_account(args: argparse.Namespace) -> int:
    return await _on_live_gateway(args, lambda a, gw: a.change_gateway_account(gw, args.account))


async def cmd_remove_gateway(args: argparse.Namespace) -> int:
    return await _on_live_gateway(args, lambda a, gw: a.remove_gateway(gw))


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
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    # every subcommand also takes --json after its own arguments
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, helptext: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=helptext, description=helptext, parents=[common]
        )
        return parser

    keys = command(sub, "keys", "actor keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    create = command(keys, "create", "create an encrypted keystore file (the passphrase is asked twice)")
    create.add_argument("--out", required=True, help="where to write the keystore (mode 0600)")
    create.add_argument("--label", default="", help="a name shown with the address (not secret)")
    create.add_argument("--scrypt-n", type=int, default=DEFAULT_SCRYPT_N, help=argparse.SUPPRESS)
    create.set_defaults(handler=cmd_keys_create)

    node = command(sub, "node", "serve an embedded chain file over JSON-RPC (one process owns it)")
    _add_node_arguments(node)
    node.set_defaults(handler=cmd_node)

    deploy = command(sub, "deploy", "deploy a new channel; the keystore's account becomes its admin")
    deploy.add_argument("--out", help="write the channel file here")
    deploy.set_defaults(handler=cmd_deploy)

    fund = command(sub, "fund", "give an account ether (development chains only)")
    fund.add_argument("address", help="the account, 0x + 40 hex")
    fund.add_argument("--ether", type=float, default=10.0, help="how much (default 10)")
    fund.set_defaults(handler=cmd_fund)

    grant = command(sub, "grant-role", "admin: grant manufacturer, maintainer, operator or admin")
    grant.add_argument("role", choices=[r.name.lower() for r in Role], help="the role to grant")
    grant.add_argument("account", help="the actor's account, 0x + 40 hex")
    grant.set_defaults(handler=cmd_grant_role)

    reg = command(sub, "register", "manufacturer: register one device, or many from --csv")
    reg.add_argument(
        "--csv",
        help="CSV with a header: device_id, model, firmware_hash, characteristics, and claim_hash or "
        "claim_code (`diams-agent provision` writes registration.csv)",
    )
    reg.add_argument("--batch-size", type=int, default=200, help="devices per transaction (default 200)")
    reg.add_argument("--quiet", action="store_true", help="no progress bar")
    reg.add_argument("--id", help="one device: its id, 16 hex digits")
    reg.add_argument("--model", help="one device: its model, text of at most 32 bytes")
    reg.add_argument("--firmware-hash", help="one device: SHA-256 of its firmware, 0x + 64 hex")
    reg.add_argument("--characteristics", help="one device: its characteristics commitment, 0x + 64 hex")
    reg.add_argument("--claim-hash", help="one device: the hash of its claim code, 0x + 64 hex")
    reg.set_defaults(handler=cmd_register)

    for action in ops.ACTIONS:
        sp = command(sub, action.name, f"{action.who}: {action.help}")
        sp.add_argument("device_id", help="the device, 16 hex digits")
        for name in action.params:
            if name == "claim_code":
                sp.add_argument(
                    "--code-file",
                    dest="claim_code",
                    required=True,
                    metavar="FILE",
                    help="file holding the claim code (0600), or - for standard input; never argv",
                )
            else:
                sp.add_argument(name, help=ops.PARAM_HELP[name])
        sp.set_defaults(handler=_action_command(action))

    rec = command(
        sub, "recover", "owner: bring a genuine device back after a clone alert (suspend + activate)"
    )
    rec.add_argument("device_id", help="the device, 16 hex digits")
    rec.set_defaults(handler=cmd_recover)

    pol = command(sub, "define-policy", "owner: define (or, as its author, redefine) a named access policy")
    pol.add_argument("policy", help="a name of at most 32 bytes, e.g. sensors")
    pol.add_argument("--publish", required=True, help="streams devices may publish, comma-separated")
    pol.add_argument("--subscribe", default="", help="streams devices may subscribe to, comma-separated")
    pol.set_defaults(handler=cmd_define_policy)

    auth = command(
        sub, "authorize-gateway", "owner: let a gateway authenticate a device (sealed key on chain)"
    )
    auth.add_argument("device_id", help="the device, 16 hex digits")
    auth.add_argument("gateway", help="the gateway's name (e.g. gw-1) or 0x + 64 hex")
    auth.add_argument(
        "--bundle",
        help="the device's owner bundle (<id>.owner.json from `diams-agent provision`): the keys are "
        "sealed from it to the gateway's registered key, for the device's current epoch",
    )
    auth.add_argument("--sealed-key", help="instead of --bundle: a sealed key made elsewhere, hex")
    auth.add_argument("--commitment", help="instead of --bundle: its key commitment, 0x + 64 hex")
    auth.set_defaults(handler=cmd_authorize)

    onb = command(sub, "onboard", "owner: claim, set the policy, activate and authorize a batch from a CSV")
    onb.add_argument(
        "--csv",
        required=True,
        help="CSV with a header: device_id, and claim_code or bundle (path of <id>.owner.json); rows "
        "without either use <device_id>.owner.json from --bundle-dir or the CSV's directory",
    )
    onb.add_argument("--policy", required=True, help="the policy's name (see define-policy)")
    onb.add_argument(
        "--gateway", action="append", help="a gateway to authorize (repeatable; needs the owner bundles)"
    )
    onb.add_argument("--bundle-dir", help="where the owner bundles are (default: the CSV's directory)")
    onb.add_argument("--batch-size", type=int, default=100, help="devices per transaction (default 100)")
    onb.add_argument("--quiet", action="store_true", help="no progress bar")
    onb.set_defaults(handler=cmd_onboard)

    rgw = command(sub, "register-gateway", "operator: register a gateway")
    rgw.add_argument("gateway", help="the gateway's name, as in its configuration (e.g. gw-1)")
    rgw.add_argument(
        "--x25519",
        required=True,
        help="its X25519 public key, 64 hex (as `show gateway` or `diams-gateway keys` print it)",
    )
    rgw.add_argument("--account", required=True, help="the gateway's own account (anchors, clone alerts)")
    rgw.set_defaults(handler=cmd_register_gateway)
    gateway_help = "the gateway's name, as registered (e.g. gw-1)"
    rot = command(
        sub,
        "rotate-gateway-key",
        "gateway operator or admin: a new X25519 key; the gateway's grants stop counting at once, and each "
        "owner deauthorizes it (epoch bump) before sealing for the new key",
    )
    rot.add_argument("gateway", help=gateway_help)
    rot.add_argument("--x25519", required=True, help="the new X25519 public key, 64 hex")
    rot.set_defaults(handler=cmd_rotate_gateway_key)
    chg = command(
        sub, "change-gateway-account", "gateway operator or admin: a new account for anchors and clone alerts"
    )
    chg.add_argument("gateway", help=gateway_help)
    chg.add_argument("--account", required=True, help="the new account, 0x + 40 hex")
    chg.set_defaults(handler=cmd_change_gateway_account)
    rmg = command(
        sub,
        "remove-gateway",
        "gateway operator or admin: retire a gateway for good (its account, grants and id); each owner "
        "then deauthorizes it for the devices it served (epoch bump)",
    )
    rmg.add_argument("gateway", help=gateway_help)
    rmg.set_defaults(handler=cmd_remove_gateway)

    show = command(sub, "show", "read records").add_subparsers(
        dest="show_command", required=True, metavar="WHAT"
    )
    sdev = command(show, "device", "a device: state, gateways, history with block times and tx hashes")
    sdev.add_argument("device_id", help="the device, 16 hex digits")
    sdev.add_argument(
        "--audit-log",
        action="append",
        help="a gateway's audit log: adds the device's authentications and alerts (repeatable)",
    )
    sdev.add_argument("--limit", type=int, default=20, help="authentications shown (default 20)")
    sdev.set_defaults(handler=cmd_show_device)
    sgw = command(
        show, "gateway",
        "a gateway: its id, X25519 public key, account, operator and history; a removed one: when, by whom "
        "and what the removal means",
    )  # fmt: skip
    sgw.add_argument("gateway", help="the gateway's name (e.g. gw-1) or 0x + 64 hex")
    sgw.set_defaults(handler=cmd_show_gateway)
    spol = command(show, "policy", "a policy: the streams it allows")
    spol.add_argument("policy", help="the policy's name or 0x + 64 hex")
    spol.set_defaults(handler=cmd_show_policy)

    lst = command(sub, "list", "list records").add_subparsers(
        dest="list_command", required=True, metavar="WHAT"
    )
    ldev = command(lst, "devices", "devices from a local index of the chain, filtered and paged")
    ldev.add_argument("--state", help="only this lifecycle state (e.g. Active)")
    ldev.add_argument("--owner", help="only this owner's devices (account)")
    ldev.add_argument("--gateway", help="only devices this gateway may authenticate now")
    ldev.add_argument("--prefix", help="only ids starting with these hex digits")
    ldev.add_argument("--limit", type=int, default=50, help="devices shown (default 50, at most 1000)")
    ldev.add_argument("--offset", type=int, default=0, help="skip this many (paging)")
    ldev.add_argument(
        "--index", help="an identity index file kept between runs (default: read the chain into memory)"
    )
    ldev.set_defaults(handler=cmd_list_devices)

    va = command(sub, "verify-anchor", "check that a Merkle root of authentications is anchored")
    va.add_argument("root", help="the Merkle root, 0x + 64 hex")
    va.add_argument(
        "--gateway-id",
        required=True,
        help="the gateway that anchored it (name or 0x + 64 hex; anchors are per gateway)",
    )
    va.add_argument("--count", type=int, help="expect this many records")
    va.set_defaults(handler=cmd_verify_anchor)
    _add_reseal_command(sub)
    _add_rekey_command(sub)
    return p


# ---- re-keying at transfer: the new owner's one step (ledger_bridge/rekey.py, PROTOCOL.md 2.3) ----
def _add_rekey_command(sub: Any) -> None:
    rk = sub.add_parser(
        "rekey",
        help="new owner, after accept-transfer: agree a fresh device secret with the device over the site's "
        "broker (the previous owner's S stops working), record the confirmation on chain",
    )
    rk.add_argument("device_id", help="the device, 16 hex digits")
    rk.add_argument("--bundle", required=True,
                    help="the device's owner bundle (<id>.owner.json): S is read from it, S' written into it")
    rk.add_argument("--broker", required=True, metavar="HOST:PORT", help="the site's MQTT broker")
    rk.add_argument("--gateway", required=True,
                    help="the gateway whose broker account is used (e.g. gw-1); while the re-key is pending "
                    "it is named on chain (startRekey) and gives the device a login for its re-key topics "
                    "only")
    rk.add_argument("--broker-password-file", required=True, metavar="FILE",
                    help="that account's broker password (0600), or - for standard input; never argv")
    rk.add_argument("--broker-username", required=True,
                    help="an account of that gateway no running connection uses, e.g. gateway-gw-1.1 (the "
                    "broker lets one connection a username: the gateway's own would be dropped)")
    rk.add_argument("--tls-ca", type=Path, help="the broker's CA certificate (a TLS listener)")
    rk.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the device (default 30)")
    rk.set_defaults(handler=cmd_rekey)


async def cmd_rekey(args: argparse.Namespace) -> int:
    from device_agent.core import rekey as core_rekey

    from .rekey import MqttRekeyChannel, RekeyTimeout, rekey_device

    dev = parse_device_id(args.device_id)
    bundle_path = Path(args.bundle)
    check_private(bundle_path, "owner bundle")
    bundle = ops.OwnerBundle.load(bundle_path)
    if bundle.device_id != dev:
        raise ValueError(f"{bundle_path.name} is the bundle of device 0x{bundle.device_id.hex()}")
    host, sep, port = args.broker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("--broker must be HOST:PORT")
    password = _claim_code_text(args.broker_password_file, "broker password")
    username = args.broker_username
    signer = _signer(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        await ops.live_gateway(ledger, args.gateway)  # a removed carrier is refused before any connection
        with MqttRekeyChannel(host=host, port=int(port), gateway_id=args.gateway, device_id=dev,
                              username=username, password=password, tls_ca=args.tls_ca,
                              timeout=args.timeout) as channel:
            try:
                first, *earlier = bundle.rekey_candidates()
                await rekey_device(
                    ledger, ledger.actor(signer), dev, secret=first, channel=channel,
                    keep=lambda s, held: ops.OwnerBundle.record_rekey(bundle_path, s, held),
                    # an earlier exchange may have stopped after S' was kept but before the device's
                    # DONE: the device then holds S' or the secret it answered that exchange under
                    earlier=earlier,
                    carrier=args.gateway.encode(),
                )
            except core_rekey.RekeyError as exc:
                if exc.reason == "bad_done":
                    raise ValueError(
                        "re-key refused (bad_done): the proof that the device stored the new secret does not "
                        "verify (forged or from another exchange); nothing recorded, run the command again"
                    ) from None
                raise ValueError(
                    f"re-key refused ({exc.reason}): not the registered device's answer (an impostor or a "
                    "substituted key); nothing recorded, the device keeps its secret"
                ) from None
            except RekeyTimeout as exc:
                raise ValueError(str(exc)) from None
        _, epoch = await ledger.device_state(dev)
    _emit(args, {"device_id": dev.hex(), "epoch": epoch, "bundle": str(bundle_path)},
          f"re-keyed 0x{dev.hex()}: the device and {bundle_path.name} hold the new secret, confirmation on "
          f"chain (epoch {epoch}); now authorize gateways: diams-ledger authorize-gateway {dev.hex()} "
          f"<gateway> --bundle {bundle_path}")
    return 0


# ---- firmware update: the owner's one step (ledger_bridge/firmware.py) ----
def _add_reseal_command(sub: Any) -> None:
    rs = sub.add_parser(
        "reseal",
        help="owner: after a firmware update (or a deauthorization), publish new sealed keys for every "
        "gateway each device is authorized for",
    )
    rs.add_argument("bundles", nargs="+", metavar="OWNER_JSON",
                    help="<id>.owner.json from diams-agent provision")
    rs.add_argument("--gateway", action="append", metavar="ID",
                    help="only these gateways (default: every gateway ever authorized on the channel but "
                    "the removed ones)")
    rs.set_defaults(handler=cmd_reseal)
    rf = sub.add_parser(
        "record-firmware-many",
        help="maintainer: record one new firmware hash for many devices (epoch + 1 each), a few hundred "
        "per transaction; a batch with one device you may not update changes nothing",
    )
    rf.add_argument("firmware_hash", help="SHA-256 of the new image, 0x + 64 hex")
    rf.add_argument("device_ids", nargs="*", metavar="DEVICE_ID", help="devices, 16 hex digits each")
    rf.add_argument("--ids-file", metavar="FILE",
                    help="more device ids, one per line ('#' starts a comment)")
    rf.set_defaults(handler=cmd_record_firmware_many)


async def cmd_reseal(args: argparse.Namespace) -> int:
    from .firmware import device_from_owner_bundle, reseal

    devices = []
    for path in args.bundles:
        try:
            devices.append(device_from_owner_bundle(json.loads(Path(path).read_text("utf-8"))))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    signer = _signer(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        # a named gateway that was removed (or never registered) is refused in words
        named = [(await ops.live_gateway(ledger, g)).gateway_id for g in args.gateway or ()]
        gateways = named or None
        report = await reseal(ledger, ledger.actor(signer), devices, gateways=gateways)
    print(report.summary())
    return 0


async def cmd_record_firmware_many(args: argparse.Namespace) -> int:
    firmware_hash = parse_bytes32(args.firmware_hash, name="firmware_hash")
    texts = [(f"argument {n}", t) for n, t in enumerate(args.device_ids, 1)]
    if args.ids_file:
        lines = Path(args.ids_file).read_text("utf-8").splitlines()
        texts += [(f"{args.ids_file}:{n}", t.split("#", 1)[0].strip()) for n, t in enumerate(lines, 1)]
    ids: list[bytes] = []
    for where, text in texts:
        if not text:
            continue
        try:
            ids.append(parse_device_id(text))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not ids:
        raise ValueError("no device ids: give them as arguments or with --ids-file")
    if len(set(ids)) != len(ids):
        raise ValueError("a device id is listed twice")
    signer = _signer(args)
    async with Ledger(backend=_backend(args), channel=_channel(args)) as ledger:
        outcomes = await ledger.actor(signer).record_firmware_many(ids, firmware_hash)
    print(f"recorded 0x{firmware_hash.hex()} for {len(ids)} devices in {len(outcomes)} transactions; "
          "their owners re-seal next (diams-ledger reseal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
