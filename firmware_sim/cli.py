"""``diams-sim``: run scenarios with many simulated devices against a running site.

    diams-sim --site run/demo-<timestamp>/site.json steady replay clone --devices 30
    diams-sim --site SITE churn --devices 20 --seconds 30 --report out/

A site file (written by ``make demo``) names the broker, the gateway, the verified-data account, the
gateway's metrics URL, the ledger and the owner's keystore (for ``revoked``), and a 0600 file of
enrolled identities the simulator may use. Scenarios: steady, churn, broker_restart, clock_skew,
replay, clone, revoked, firmware_mismatch, counter_window (``broker_restart`` needs a broker this
process owns: it is run by the tests and ``bench/bench_sim.py``). Exit status: 0 when every
scenario's checks held, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from device_agent.private import KeystoreError
from gateway.mqtt import MqttError

from .fleet import Observer, Pacer, Progress, SiteAccess, metrics_reader
from .identities import load_identities
from .report import FleetReport
from .scenarios import SCENARIOS, ScenarioParams, identities_needed, run_scenario

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diams-sim", description="Simulated DIAMS devices against a site")
    p.add_argument("scenarios", nargs="+", choices=sorted(SCENARIOS), metavar="SCENARIO")
    p.add_argument("--site", type=Path, required=True, help="site.json written by `make demo`")
    p.add_argument("--devices", type=int, default=20, help="devices for steady/churn/clock_skew")
    p.add_argument("--attackers", type=int, default=2, help="devices attacked per attack scenario")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of steady and churn")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a device's data messages")
    p.add_argument("--rate", type=float, default=1000.0, help="connects per second at ramp-up")
    p.add_argument("--report", type=Path, default=None, help="write report.json and latency.svg here")
    p.add_argument(
        "--broker",
        choices=("site", "mosquitto", "rabbitmq-cluster"),
        default="site",
        help="the site's broker kind (checked against site.json); a cluster spreads devices over its nodes",
    )
    return p


def _counted(items: list[Any], record: Callable[[int], object]) -> Iterator[Any]:
    for n, item in enumerate(items, 1):
        record(n)
        yield item


async def _run(args: argparse.Namespace) -> int:
    site_file = json.loads(args.site.read_text())
    # attacks leave marks on an identity (quarantine, revocation): each run takes fresh ones and
    # records how many it consumed next to the identities file
    ids_path = Path(site_file["identities"])
    used_path = ids_path.with_suffix(".used")
    used = int(used_path.read_text()) if used_path.exists() else 0
    identities = load_identities(ids_path)[used:]
    params = ScenarioParams(
        devices=args.devices, attackers=args.attackers, seconds=args.seconds, data_interval=args.interval
    )
    needed = sum(identities_needed(n, params) for n in args.scenarios)
    if needed > len(identities):
        print(
            f"error: these scenarios need {needed} fresh identities, the site has {len(identities)} left",
            file=sys.stderr,
        )
        return 2
    host, port = site_file["broker"]["host"], int(site_file["broker"]["port"])
    kind = site_file["broker"].get("kind", "mosquitto")
    if args.broker not in ("site", kind):
        print(f"error: --broker {args.broker}, but the site's broker is {kind}", file=sys.stderr)
        return 2
    others = tuple(int(p) for p in site_file["broker"].get("ports", ()) if int(p) != port)
    obs_conf = site_file.get("observer")
    observer = None
    if obs_conf:
        password = Path(obs_conf["password_file"]).read_text().strip()
        observer = await Observer().start(host, port, username=obs_conf["username"], password=password)
    ledger = owner = None
    if "revoked" in args.scenarios:
        from ledger_bridge import Channel, Ledger, RpcBackend, load_signer

        chan = json.loads(Path(site_file["ledger"]["channel_file"]).read_text())
        ledger = Ledger(backend=RpcBackend(url=site_file["ledger"]["url"]), channel=Channel(**chan))
        await ledger.__aenter__()
        o = site_file["owner"]
        signer = load_signer(Path(o["keystore"]), Path(o["passphrase_file"]).read_text().rstrip("\n"))
        owner = ledger.actor(signer)
    site = SiteAccess(
        host=host,
        port=port,
        ports=others,
        subscribe_qos=0 if kind == "rabbitmq-cluster" else 1,
        gateway_id=site_file["gateway_id"],
        identities=_counted(identities, lambda n: used_path.write_text(f"{used + n}\n")),
        owner=owner,
        observer=observer,
        gateway_metric=metrics_reader(site_file["metrics_url"]) if site_file.get("metrics_url") else None,
        pacer=Pacer(args.rate),
    )
    report = FleetReport()
    t0 = time.monotonic()
    try:
        with Progress(site.stats) as progress:
            for name in args.scenarios:
                progress.label = name
                report.scenarios.append(await run_scenario(site, name, params))
    finally:
        report.seconds = time.monotonic() - t0
        if observer is not None:
            await observer.close()
        if ledger is not None:
            await ledger.__aexit__(None, None, None)
    print(report.render())
    if args.report is not None:
        json_path, svg_path = report.write(args.report)
        print(f"report {json_path}, histogram {svg_path}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except (MqttError, KeystoreError, OSError, ValueError, KeyError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
