"""One way to build a DIAMS site on this machine, for the tests, the benchmarks and ``make demo``.

A site is a private Mosquitto with the gateway enforcer's password/ACL files, a channel deployed on a
ledger with one key per actor, devices onboarded as their actors would onboard them, and the
settings a gateway needs to serve them. What differs between the users is passed in, not copied:

- the ledger (eth-tester in process for tests, anvil for the gateway benchmark, the embedded node
  for the demo) is a ``Ledger`` the caller has entered;
- the actors' keys (fresh ``Signer``s, or the demo's encrypted keystores);
- how the gateway runs (in process for tests, a subprocess from a TOML file for the demo, a spawned
  process for the benchmark): ``gateway_settings()`` gives the values, the caller starts it.

Strategy: every step is a plain function of explicit values, in the order a real site goes through
them (broker files before the broker starts; deploy, roles and policy before devices are onboarded;
gateway keys registered before devices seal keys for them), so a test reads the same story as the demo.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.broker import (
    AuthorizeGateway,
    BrokerSecret,
    Change,
    ConnectionLog,
    MosquittoEnforcer,
    mosquitto_config_lines,
)
from gateway.settings import BrokerSettings, GatewaySettings, HttpSettings, LedgerSettings
from ledger_bridge import Ledger, Role, Signer
from ledger_bridge.actor import ActorHandle
from ledger_bridge.enrollment import GatewayPublicKey, ProvisionedDevice, onboard
from ledger_bridge.index import onchain_gateway_id
from ledger_bridge.model import Channel
from ledger_bridge.sealing import generate_gateway_key

from .broker import MosquittoBroker

__all__ = [
    "ETH",
    "FIRMWARE",
    "POLICY",
    "Enrollment",
    "SitePlan",
    "account_name",
    "actor_names",
    "admit_gateways",
    "enforce_on",
    "enroll",
    "gateway_settings",
]

ETH = 10**18
POLICY = hashlib.sha256(b"policy: sensors").digest()
FIRMWARE = hashlib.sha256(b"firmware 1.0").digest()
ROLE_ACTORS = ("admin", "manufacturer", "owner", "operator")


def account_name(gateway_id: str) -> str:
    """The actor name of a gateway's own ledger account (anchors, clone alerts)."""
    return f"account-{gateway_id}"


@dataclass(frozen=True, kw_only=True)
class SitePlan:
    """What a site holds: its gateways, its fleet and the policy the fleet's owner sets."""

    gateway_ids: tuple[str, ...] = ("gw-a",)
    devices: int = 3
    publish: tuple[str, ...] = ("telemetry", "status")
    subscribe: tuple[str, ...] = ("config",)
    policy_id: bytes = POLICY
    firmware_hash: bytes = FIRMWARE
    model: str = "diams-sensor"
    serial_format: str = "SN{:05d}"
    funds: int = 100 * ETH

    def __post_init__(self) -> None:
        if not self.gateway_ids:
            raise ValueError("a site needs at least one gateway")
        if self.devices < 0:
            raise ValueError(f"devices must be >= 0, got {self.devices}")


def actor_names(plan: SitePlan) -> list[str]:
    return [*ROLE_ACTORS, *(account_name(g) for g in plan.gateway_ids)]


# ---- the broker -------------------------------------------------------------------------------------


def enforce_on(
    broker: MosquittoBroker, *, extra_config: Sequence[str] = (), **enforcer_options: Any
) -> MosquittoEnforcer:
    """Point ``broker`` (not started yet) at password/ACL files in its directory; -> their enforcer.

    As in production, the broker refuses retained messages, so the enforcer reads the broker's version
    in its log (``connection_log``, which also confirms cut-offs). ``enforcer_options`` go to
    ``MosquittoEnforcer`` (e.g. ``min_reload_interval``)."""
    passwords, acl = broker.directory / "passwords", broker.directory / "acl"
    broker.extra_config = [*mosquitto_config_lines(passwords, acl, retain_available=False), *extra_config]
    options: dict[str, Any] = {
        "rights": "patterns",
        "connection_log": ConnectionLog(broker.log_path),
        **enforcer_options,
    }
    return MosquittoEnforcer(
        password_file=passwords,
        acl_file=acl,
        reload=broker.reload,
        broker_address=(broker.host, broker.port),
        file_group=broker.file_group,
        **options,
    )


def admit_gateways(
    enforcer: MosquittoEnforcer,
    secrets: Mapping[str, str],
    *,
    connections: int,
    extra: Iterable[Change] = (),
) -> None:
    """Write the broker's first files: each gateway's accounts (``connections`` each) and ``extra``.

    A gateway daemon rewrites both files once it runs; its own accounts must exist before it starts."""
    enforcer.stage(
        [
            *(
                AuthorizeGateway(gateway_id=gid, secret=BrokerSecret(secret), connections=connections)
                for gid, secret in secrets.items()
            ),
            *extra,
        ]
    )
    enforcer.write_files()


# ---- the ledger -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    """A deployed channel, its actors and its onboarded fleet."""

    channel: Channel
    signers: Mapping[str, Signer]
    actors: Mapping[str, ActorHandle]
    devices: Sequence[ProvisionedDevice]
    gateway_keys: Mapping[str, GatewayPublicKey]


async def enroll(
    ledger: Ledger,
    plan: SitePlan,
    *,
    key_dir: Path,
    signers: Mapping[str, Signer] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Enrollment:
    """Deploy a channel on ``ledger`` and onboard ``plan.devices`` devices for every gateway.

    ``signers``: one per ``actor_names(plan)`` (fresh keys when None). Each gateway's X25519 key is
    written to ``key_dir/<gateway_id>.key`` (0600) and registered by the operator. ``progress`` is
    ``onboard``'s, called once with ("onboarding", 0) before the first step."""
    names = actor_names(plan)
    if signers is None:
        signers = {n: Signer.generate(label=n) for n in names}
    missing = sorted(set(names) - set(signers))
    if missing:
        raise ValueError(f"no signer for {', '.join(missing)}")
    for name in names:
        await ledger.fund(signers[name].address, plan.funds)
    channel = await ledger.deploy(admin=signers["admin"])
    actors = {n: ledger.actor(signers[n]) for n in names}
    await actors["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)
    await actors["admin"].grant_role(Role.OPERATOR, signers["operator"].address)
    await actors["owner"].define_policy(
        plan.policy_id, publish=list(plan.publish), subscribe=list(plan.subscribe)
    )
    keys: dict[str, GatewayPublicKey] = {}
    for gid in plan.gateway_ids:
        pub = generate_gateway_key(key_dir / f"{gid}.key")
        await actors["operator"].register_gateway(
            onchain_gateway_id(gid.encode()),
            x25519_public_key=pub,
            account=signers[account_name(gid)].address,
        )
        keys[gid] = GatewayPublicKey(gateway_id=gid.encode(), x25519_public_key=pub)
    devices = [
        ProvisionedDevice.generate(
            model=plan.model, serial=plan.serial_format.format(i), firmware_hash=plan.firmware_hash
        )
        for i in range(plan.devices)
    ]
    if progress is not None:
        progress("onboarding", 0)  # the start mark of the benchmark's enrolment figures
    await onboard(
        manufacturer=actors["manufacturer"],
        owner=actors["owner"],
        devices=devices,
        gateways=list(keys.values()),
        policy_id=plan.policy_id,
        progress=progress,
    )
    return Enrollment(channel=channel, signers=signers, actors=actors, devices=devices, gateway_keys=keys)


# ---- the gateway ------------------------------------------------------------------------------------


def _own_broker(broker: MosquittoBroker | None, accounts: int) -> BrokerSettings:
    if broker is None:
        raise ValueError("gateway_settings needs a broker or broker_settings")
    return BrokerSettings(host=broker.host, port=broker.port, accounts=accounts)


def gateway_settings(
    gateway_id: str,
    *,
    key_dir: Path,
    broker: MosquittoBroker | None,
    ledger: LedgerSettings,
    accounts: int = 1,
    broker_settings: BrokerSettings | None = None,
    **sections: Any,
) -> GatewaySettings:
    """The settings of the gateway ``gateway_id`` of a site whose keys ``enroll`` wrote in ``key_dir``.

    Its state lives in ``key_dir/<gateway_id>/``; HTTP on a free port unless ``http=`` says otherwise;
    the broker connection is ``broker``'s own (``accounts`` usernames) unless ``broker_settings``;
    ``sections`` are the other ``GatewaySettings`` fields (``protocol=``, ``defence=``, ...)."""
    sections.setdefault("http", HttpSettings(port=0))
    return GatewaySettings(
        gateway_id=gateway_id,
        state_dir=key_dir / gateway_id,
        key_file=key_dir / f"{gateway_id}.key",
        broker=broker_settings or _own_broker(broker, accounts),
        ledger=ledger,
        **sections,
    )
