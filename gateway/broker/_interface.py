"""What the gateway asks of a broker: the changes, and the ``BrokerEnforcer`` interface.

A device's rights at the broker go through these states (only these transitions exist)::

    (absent) --Enroll--> ENROLLED --Grant--> GRANTED
                 ^          ^  |               |
                 |          |  +<--Demote------+
                 +--CutOff--+------CutOff------+--> (absent)

    (absent) --EnrollRekey--> REKEYING --Enroll--> ENROLLED      REKEYING --CutOff--> (absent)

- ENROLLED: it may connect with its broker credential and reach only its own handshake topics
  (publish "up", receive "down", with any gateway; topic layout in ``device_agent.core.topics``).
- GRANTED: additionally publish data topics for the streams of its policy, and receive command
  topics, with any gateway. A new Grant replaces the stream set.
- REKEYING: the re-key window after a transfer (docs/PROTOCOL.md 2.3): it may connect with its
  broker credential and reach only its own re-key topics with one gateway (publish "up", receive
  "down"): no handshake, data or command topic. Grant is refused; Demote leaves it as it is.
- CutOff removes the credential: a connected device is dropped and refused on reconnect.
  Enroll of an enrolled device replaces its credential, which also drops a live connection.

Gateways have their own accounts (``AuthorizeGateway``): receive their handshake ``up`` topics and all
data, publish ``down``, verified data and commands. Applications have read-only accounts of their own
(``AuthorizeApplication``): they receive the verified topics and nothing else.

Clustered brokers (not built; the same interface fits). EMQX would keep no files: its HTTP
authentication and authorization hooks (``authentication`` with ``mechanism = password_based,
backend = http`` and ``authorization.sources = [{type = http}]``) would call a small endpoint served
by the gateway, answering from the same in-memory table this interface maintains, with EMQX's
authorization cache TTL kept short. ``apply()`` would update the table (no reload, no batching needed)
and, for CutOff or a credential change, call EMQX's REST API ``DELETE /api/v5/clients/{clientid}``
to kick the live session and ``DELETE /api/v5/authorization/cache`` (or per-client cache) so that an
ACL change takes effect at once. Cut-off then costs one HTTP call per device, cluster-wide.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from ._names import application_username, check_device_id, check_gateway_id, check_stream
from ._secret import BrokerSecret


@dataclass(frozen=True, kw_only=True, slots=True)
class Enroll:
    """Let the device connect with ``secret``; handshake topics only. Replaces an earlier credential."""

    device_id: str
    secret: BrokerSecret = field(repr=False)

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if not isinstance(self.secret, BrokerSecret):
            raise TypeError("Enroll.secret must be a BrokerSecret")


@dataclass(frozen=True, kw_only=True, slots=True)
class EnrollRekey:
    """Let the device connect with ``secret`` for its re-key topics with ``gateway_id`` only (REKEYING).
    Replaces an earlier credential (and its rights) of that device."""

    device_id: str
    gateway_id: str
    secret: BrokerSecret = field(repr=False)

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        check_gateway_id(self.gateway_id)
        if not isinstance(self.secret, BrokerSecret):
            raise TypeError("EnrollRekey.secret must be a BrokerSecret")


@dataclass(frozen=True, kw_only=True, slots=True)
class Grant:
    """After authentication: publish data on ``streams``, receive its own commands."""

    device_id: str
    streams: frozenset[str]

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if isinstance(self.streams, str):
            raise TypeError("Grant.streams must be a collection of stream names, not a string")
        object.__setattr__(self, "streams", frozenset(check_stream(s) for s in self.streams))


@dataclass(frozen=True, kw_only=True, slots=True)
class Demote:
    """Back to handshake topics only (session ended); the connection stays up. No-op when absent."""

    device_id: str

    def __post_init__(self) -> None:
        check_device_id(self.device_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class CutOff:
    """Remove the device: drop its live connection, refuse it on reconnect. No-op when absent."""

    device_id: str

    def __post_init__(self) -> None:
        check_device_id(self.device_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthorizeGateway:
    """Create or update a gateway's account(s): ``connections`` usernames sharing one secret."""

    gateway_id: str
    secret: BrokerSecret = field(repr=False)
    connections: int = 1

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway_id)
        if not isinstance(self.secret, BrokerSecret):
            raise TypeError("AuthorizeGateway.secret must be a BrokerSecret")
        if not 1 <= self.connections <= 64:
            raise ValueError("AuthorizeGateway.connections must be between 1 and 64")


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoveGateway:
    gateway_id: str

    def __post_init__(self) -> None:
        check_gateway_id(self.gateway_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthorizeApplication:
    """Create or update an application's read-only account ``app-<name>``: it may only receive the
    verified topics (data some gateway verified), never publish, and shares no gateway's secret."""

    name: str
    secret: BrokerSecret = field(repr=False)

    def __post_init__(self) -> None:
        application_username(self.name)
        if not isinstance(self.secret, BrokerSecret):
            raise TypeError("AuthorizeApplication.secret must be a BrokerSecret")


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoveApplication:
    name: str

    def __post_init__(self) -> None:
        application_username(self.name)


Change = (
    Enroll | EnrollRekey | Grant | Demote | CutOff | AuthorizeGateway | RemoveGateway | AuthorizeApplication
    | RemoveApplication
)


class BrokerEnforcer(abc.ABC):
    """Access control at the broker. ``apply`` returns once the changes are live at the broker.

    Implementations validate a whole batch before changing anything (all or nothing), and may
    coalesce concurrent calls into one broker update.
    """

    @abc.abstractmethod
    async def apply(self, changes: Iterable[Change]) -> None:
        """Apply ``changes`` in order; return when the broker enforces them."""

    async def enroll(self, device_id: str, secret: BrokerSecret) -> None:
        await self.apply([Enroll(device_id=device_id, secret=secret)])

    async def grant(self, device_id: str, streams: Iterable[str]) -> None:
        await self.apply([Grant(device_id=device_id, streams=frozenset(streams))])

    async def demote(self, device_id: str) -> None:
        await self.apply([Demote(device_id=device_id)])

    async def cut_off(self, device_id: str) -> None:
        await self.apply([CutOff(device_id=device_id)])

    async def aclose(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release background resources (default: nothing)."""

    async def __aenter__(self) -> BrokerEnforcer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

