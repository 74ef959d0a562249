"""Decisions for a broker's HTTP authorization backend: who logs in, who reaches which topic (sans-IO).

Strategy: the broker (RabbitMQ's ``rabbitmq_auth_backend_http``, EMQX's HTTP authn/authz) asks four
questions: may this user log in with this password (``user``), enter this virtual host (``vhost``),
use this queue or exchange (``resource``), publish or subscribe on this routing key (``topic``).
``AccessRules`` answers them from memory, from a table the ``HttpEnforcer`` keeps with the same
changes as every other enforcer (Enroll/Grant/Demote/CutOff/AuthorizeGateway): no I/O, no locks, one
dict look-up and at most one constant-time compare per question.

Rights (the same layout as the Mosquitto files, but exact, since nothing here costs a reload; the
topic shapes are ``device_agent.core.topics``'):
- a device (username = its 16-hex id, client id = the same) that is ENROLLED publishes its handshake
  ``up`` topics and subscribes its handshake ``down`` and command topics, with any gateway (and the
  same two directions of its re-key topics, docs/PROTOCOL.md 2.3); only while
  GRANTED by gateway G (a live session there) does it publish its data topics of gateway G, and only
  for the streams of its policy. Nothing else: no data before authentication. Subscribing to its own
  commands is allowed before authentication because devices subscribe when they connect (RabbitMQ
  closes a connection whose subscription is refused), a broker checks a subscription only once (so
  gating it on a session would be illusory), and commands are sealed under the session key and sent
  by the gateway only to a live session.
- a device in the re-key window (REKEYING, ``EnrollRekey``) reaches its two re-key topics with the one
  gateway named to carry the re-key, and nothing else (no handshake, data or command topic).
- a gateway account (``gateway-<gw>`` or ``gateway-<gw>.<n>``) has the Mosquitto ACL's rights: read
  its handshake ``up`` and data topics and all verified data, write its handshake ``down``, verified
  data and command topics under its own id, and the re-key topics under its id (read ``up``, write
  ``down``: the new owner's tool runs a re-key with the gateway's account). Its rights follow from its
  name, so any gateway's endpoint can answer them.
  On RabbitMQ a gateway account may instead be an internal user of the broker
  (``gateway_account_permissions``: the same table as regular expressions), so that the broker decides
  its topics itself: a gateway publishes on one ``down`` topic per device, and RabbitMQ 3.10 remembers
  only 12 allowed topics per connection, so otherwise nearly every gateway reply asks this endpoint.
- an application account (``app-<name>``, ``enforcement.applications``, as on Mosquitto) is read-only:
  it subscribes to verified topics (``verified/#`` or narrower) and publishes nothing, so it can forge
  no verified data, no REJECT, no command. Its client id is its username (Mosquitto forces the same).
  Each gateway's endpoint knows the application accounts of its own settings: on a cluster every
  gateway lists the same applications (nothing is forwarded for them).
Questions only another gateway can answer (its account's password, a session it holds) come back as
``Verdict.forward_to`` that gateway; the server asks that gateway's endpoint, or refuses.

Topics arrive as AMQP routing keys: RabbitMQ turns ``/`` into ``.`` and ``+`` into ``*``. A level
that contains a ``.`` therefore splits in two and fails the structural match: it is refused.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

from device_agent.core.topics import ANY, COMMAND, DATA, DOWN, HANDSHAKE, REKEY, UP, VERIFIED

from ._names import PREFIX

_PREFIX = tuple(PREFIX.split("/"))
_DEVICE = re.compile(r"[0-9a-f]{16}")
_GATEWAY = re.compile(r"[a-z0-9-]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_GATEWAY_USER = re.compile(r"gateway-([a-z0-9-]{1,32})(?:\.([1-9][0-9]?))?")
_APPLICATION_USER = re.compile(r"app-([a-z0-9-]{1,32})")
MQTT_EXCHANGE = "amq.topic"
VHOST = "/"


@dataclass(frozen=True, slots=True)
class Verdict:
    allow: bool
    reason: str = ""  # why it was refused (a metric label), "" when allowed
    forward_to: str | None = None  # the gateway whose endpoint can answer

    @property
    def body(self) -> bytes:
        return b"allow" if self.allow else b"deny"


ALLOW = Verdict(True)


def _deny(reason: str) -> Verdict:
    return Verdict(False, reason)


@dataclass(slots=True)
class DeviceRights:
    password: bytes = field(repr=False)  # the broker password, compared in constant time
    streams: frozenset[str] | None = None  # GRANTED by this gateway (a live session): its streams
    rekey_gateway: str | None = None  # REKEYING: its re-key topics with this gateway, nothing else


@dataclass(frozen=True, slots=True)
class GatewayAccount:
    password: bytes = field(repr=False)
    connections: int


class AccessRules:
    """The decision table of one gateway (``gateway_id``); fed by ``HttpEnforcer``, read by the server."""

    def __init__(self, *, gateway_id: str, vhost: str = VHOST, exchange: str = MQTT_EXCHANGE) -> None:
        self.gateway_id = gateway_id
        self.vhost = vhost
        self.exchange = exchange
        self.devices: dict[str, DeviceRights] = {}
        self.gateways: dict[str, GatewayAccount] = {}
        self.applications: dict[str, bytes] = {}  # application name -> its password (read-only accounts)

    def __repr__(self) -> str:
        return f"AccessRules({self.gateway_id}, devices={len(self.devices)}, gateways={len(self.gateways)})"

    # -- login ---------------------------------------------------------------------------------------

    def user(self, username: str, password: str, client_id: str | None) -> Verdict:
        if _DEVICE.fullmatch(username):
            record = self.devices.get(username)
            if record is None:
                return _deny("unknown_device")
            if not hmac.compare_digest(record.password, password.encode()):
                return _deny("bad_password")
            # a device's client id is its id: no device can kick another by taking its client id
            if client_id is not None and client_id != username:
                return _deny("client_id")
            return ALLOW
        m = _GATEWAY_USER.fullmatch(username)
        if m is None:
            return self._application_user(username, password, client_id)
        gid = m.group(1)
        if gid != self.gateway_id:
            return Verdict(False, "other_gateway", forward_to=gid)
        account = self.gateways.get(gid)
        if account is None:
            return _deny("unknown_gateway")
        if not hmac.compare_digest(account.password, password.encode()):
            return _deny("bad_password")
        if int(m.group(2) or 0) >= account.connections:
            return _deny("unknown_user")
        if client_id is not None and client_id != username:
            return _deny("client_id")
        return ALLOW

    def _application_user(self, username: str, password: str, client_id: str | None) -> Verdict:
        m = _APPLICATION_USER.fullmatch(username)
        if m is None:
            return _deny("unknown_user")
        secret = self.applications.get(m.group(1))
        if secret is None:
            return _deny("unknown_application")
        if not hmac.compare_digest(secret, password.encode()):
            return _deny("bad_password")
        if client_id is not None and client_id != username:
            return _deny("client_id")
        return ALLOW

    def vhost_access(self, username: str, vhost: str) -> Verdict:
        if vhost != self.vhost:
            return _deny("vhost")
        return ALLOW if _known_shape(username) else _deny("unknown_user")

    def resource(self, username: str, kind: str, name: str, permission: str) -> Verdict:
        """Queues and exchanges the MQTT plugin uses for this user, nothing else."""
        if not _known_shape(username):
            return _deny("unknown_user")
        if kind == "exchange" and name == self.exchange and permission in ("read", "write"):
            return ALLOW
        if kind == "queue" and name in (f"mqtt-subscription-{username}qos{q}" for q in (0, 1)):
            return ALLOW
        return _deny("resource")

    # -- topics --------------------------------------------------------------------------------------

    def topic(
        self, username: str, routing_key: str, permission: str, client_id: str | None = None
    ) -> Verdict:
        if permission not in ("read", "write"):
            return _deny("permission")
        levels = routing_key.split(".")
        if tuple(levels[: len(_PREFIX)]) != _PREFIX:
            return _deny("topic")
        rest = levels[len(_PREFIX) :]
        if _DEVICE.fullmatch(username):
            if client_id is not None and client_id != username:
                return _deny("client_id")
            return self._device_topic(username, rest, permission)
        m = _GATEWAY_USER.fullmatch(username)
        if m is not None:
            return _gateway_topic(m.group(1), rest, permission)
        m = _APPLICATION_USER.fullmatch(username)
        if m is None or m.group(1) not in self.applications:
            return _deny("unknown_user")
        if client_id is not None and client_id != username:
            return _deny("client_id")
        if permission != "read":
            return _deny("read_only")
        ok = all(level in ("*", "#") or _NAME.fullmatch(level) for level in rest)
        return ALLOW if ok and _within(rest, (VERIFIED, "#")) else _deny("application_rights")

    def _device_topic(self, did: str, rest: list[str], permission: str) -> Verdict:
        # every shape a device may use has 4 levels: kind / gateway / own id / leaf
        if len(rest) != 4 or rest[2] != did or not _GATEWAY.fullmatch(rest[1]):
            return _deny("not_own_topic")
        kind, gid, _, leaf = rest
        record = self.devices.get(did)
        if record is None:
            return _deny("unknown_device")
        if record.rekey_gateway is not None:  # the re-key window: its re-key topics with that gateway only
            if kind != REKEY or gid != record.rekey_gateway:
                return _deny("rekey_only")
            wanted = "write" if leaf == UP else "read" if leaf == DOWN else None
            return ALLOW if permission == wanted else _deny("not_own_topic")
        if kind == HANDSHAKE or kind == REKEY:  # re-key: docs/PROTOCOL.md 2.3, the same directions
            wanted = "write" if leaf == UP else "read" if leaf == DOWN else None
            return ALLOW if permission == wanted else _deny("not_own_topic")
        if kind == COMMAND:
            ok = permission == "read" and (leaf == "*" or _NAME.fullmatch(leaf) is not None)
            return ALLOW if ok else _deny("not_own_topic")
        if kind != DATA or permission != "write" or not _NAME.fullmatch(leaf):
            return _deny("not_own_topic")
        if gid != self.gateway_id:
            return Verdict(False, "other_gateway", forward_to=gid)
        streams = record.streams
        if streams is None:
            return _deny("no_session")
        return ALLOW if leaf in streams else _deny("stream_not_in_policy")


def _known_shape(username: str) -> bool:
    return any(p.fullmatch(username) is not None for p in (_DEVICE, _GATEWAY_USER, _APPLICATION_USER))


# A gateway's rights, as (permission, topic filter levels after the prefix); "+" one level, "#" the rest.
def _gateway_rights(gid: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("read", (HANDSHAKE, gid, ANY, UP)),
        ("write", (HANDSHAKE, gid, ANY, DOWN)),
        ("read", (DATA, gid, ANY, ANY)),
        ("read", (VERIFIED, "#")),
        ("write", (VERIFIED, gid, ANY, ANY)),
        ("write", (COMMAND, gid, ANY, ANY)),
        ("read", (REKEY, gid, ANY, UP)),
        ("write", (REKEY, gid, ANY, DOWN)),
    )


def _within(requested: list[str], right: tuple[str, ...]) -> bool:
    """Is every topic the requested filter (routing-key levels, ``*``/``#`` wildcards) inside ``right``?"""
    for i, level in enumerate(right):
        if level == "#":
            return True
        if i >= len(requested):
            return False
        got = requested[i]
        if got == "#":
            return False  # the request covers more levels than the right allows here
        if level == ANY:
            if got != "*" and not _NAME.fullmatch(got):
                return False
        elif got != level:
            return False
    return len(requested) == len(right)


def _gateway_topic(gid: str, rest: list[str], permission: str) -> Verdict:
    if not rest or not all(level in ("*", "#") or _NAME.fullmatch(level) for level in rest):
        return _deny("topic")
    for allowed, right in _gateway_rights(gid):
        if allowed == permission and _within(rest, right):
            return ALLOW
    return _deny("gateway_rights")


# -- the same gateway rights as RabbitMQ internal-user permissions -----------------------------------------

_LEVEL_RE = r"[A-Za-z0-9_-]+"  # _NAME without its length bound (a right over longer names is no wider)
_ANY_RE = r"(?:\*|" + _LEVEL_RE + ")"  # one level: a name, or the "+" of a filter (a "*" in a binding key)
# the very end of the name: "$" would also match before a final newline (in PCRE as in Python)
_END = r"(?![\s\S])"
_REST_RE = r"(?:\.(?:\*|#|" + _LEVEL_RE + "))*"  # "#": any further levels, wildcards included


@dataclass(frozen=True, slots=True)
class AccountPermissions:
    """A broker account's rights as RabbitMQ internal-user permissions: regular expressions over
    resource names (``configure``/``write``/``read``) and, on the MQTT exchange, over routing keys
    (``topic_write``/``topic_read``). A user with no topic permission may use every topic, so both
    are always set."""

    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str


def _right_regex(levels: tuple[str, ...]) -> str:
    parts = [re.escape(level) for level in _PREFIX]
    tail = ""
    for level in levels:
        if level == "#":
            tail = _REST_RE
            break
        parts.append(_ANY_RE if level == ANY else re.escape(level))
    return r"\.".join(parts) + tail


def gateway_account_permissions(username: str, exchange: str = MQTT_EXCHANGE) -> AccountPermissions:
    """The rights of gateway account ``username`` (``gateway-<gw>[.<n>]``) as RabbitMQ permissions:
    exactly what ``AccessRules`` answers for it (``tests/cluster`` checks the two agree)."""
    m = _GATEWAY_USER.fullmatch(username)
    if m is None:
        raise ValueError(f"not a gateway account name: {username!r}")
    rights = _gateway_rights(m.group(1))

    def topics_for(permission: str) -> str:
        return "^(?:" + "|".join(_right_regex(r) for p, r in rights if p == permission) + ")" + _END

    queues = re.escape(f"mqtt-subscription-{username}qos") + "[01]"
    return AccountPermissions(
        configure=f"^{queues}{_END}",
        write=f"^(?:{re.escape(exchange)}|{queues}){_END}",
        read=f"^(?:{re.escape(exchange)}|{queues}){_END}",
        topic_write=topics_for("write"),
        topic_read=topics_for("read"),
    )
