"""Access control at the MQTT broker: who may connect, publish and subscribe where.

The gateway drives a ``BrokerEnforcer`` with small change values (``Enroll``, ``EnrollRekey``, ``Grant``,
``Demote``, ``CutOff``, ``AuthorizeGateway``, ``RemoveGateway``, and read-only application accounts with
``AuthorizeApplication``, ``RemoveApplication``); ``MosquittoEnforcer`` implements it with
mosquitto's password and ACL files and batched SIGHUP reloads; ``HttpEnforcer`` answers a clustered
broker's HTTP authorization requests (``AuthzServer``) from memory and closes connections through the
broker's management API. See ``_interface`` for the states and a
note on clustered brokers, ``_mosquitto`` for the reload strategy, ``_names`` for the topic layout.
"""

from __future__ import annotations

from ._canary import CanaryAnswer, canary_login
from ._connections import ConnectionLog
from ._errors import BrokerError, InvalidIdentifier, ReloadFailed, UnknownDevice, UnsafeBroker
from ._http_enforcer import BrokerAccounts, ConnectionCloser, HttpEnforcer, RabbitManagement
from ._http_rights import AccessRules, AccountPermissions, Verdict, gateway_account_permissions
from ._http_server import AuthzServer
from ._interface import (
    AuthorizeApplication,
    AuthorizeGateway,
    BrokerEnforcer,
    Change,
    CutOff,
    Demote,
    Enroll,
    EnrollRekey,
    Grant,
    RemoveApplication,
    RemoveGateway,
)
from ._mosquitto import MosquittoEnforcer, Reloader, RightsMode, mosquitto_config_lines, sighup_reloader
from ._names import (
    ANY,
    COMMAND,
    DATA,
    HANDSHAKE,
    PREFIX,
    USER,
    VERIFIED,
    application_username,
    check_command,
    check_device_id,
    check_gateway_id,
    check_stream,
    command_topic,
    data_topic,
    every,
    gateway_username,
    handshake_down,
    handshake_up,
    topic_filter,
    verified_topic,
)
from ._secret import BrokerSecret, mosquitto_sha512_hash
from ._version import MIN_SAFE_VERSION, check_mosquitto_version, parse_mosquitto_version

__all__ = [
    "ANY",
    "COMMAND",
    "DATA",
    "HANDSHAKE",
    "MIN_SAFE_VERSION",
    "PREFIX",
    "USER",
    "VERIFIED",
    "AccessRules",
    "AccountPermissions",
    "AuthorizeApplication",
    "AuthorizeGateway",
    "AuthzServer",
    "BrokerAccounts",
    "BrokerEnforcer",
    "BrokerError",
    "BrokerSecret",
    "CanaryAnswer",
    "Change",
    "ConnectionCloser",
    "ConnectionLog",
    "CutOff",
    "Demote",
    "Enroll",
    "EnrollRekey",
    "Grant",
    "HttpEnforcer",
    "InvalidIdentifier",
    "MosquittoEnforcer",
    "RabbitManagement",
    "ReloadFailed",
    "Reloader",
    "RemoveApplication",
    "RemoveGateway",
    "RightsMode",
    "UnknownDevice",
    "UnsafeBroker",
    "Verdict",
    "application_username",
    "canary_login",
    "check_command",
    "check_device_id",
    "check_gateway_id",
    "check_mosquitto_version",
    "check_stream",
    "command_topic",
    "data_topic",
    "every",
    "gateway_account_permissions",
    "gateway_username",
    "handshake_down",
    "handshake_up",
    "mosquitto_config_lines",
    "mosquitto_sha512_hash",
    "parse_mosquitto_version",
    "sighup_reloader",
    "topic_filter",
    "verified_topic",
]
