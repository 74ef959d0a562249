"""Access control at the MQTT broker: who may connect, publish and subscribe where.

The gateway drives a ``BrokerEnforcer`` with small change values (``Enroll``, ``Grant``, ``Demote``,
``CutOff``, ``AuthorizeGateway``, ``RemoveGateway``); ``MosquittoEnforcer`` implements it with
mosquitto's password and ACL files and batched SIGHUP reloads. See ``_interface`` for the states and a
note on clustered brokers, ``_mosquitto`` for the reload strategy, ``_names`` for the topic layout.
"""

from __future__ import annotations

from ._errors import BrokerError, InvalidIdentifier, ReloadFailed, UnknownDevice
from ._interface import AuthorizeGateway, BrokerEnforcer, Change, CutOff, Demote, Enroll, Grant, RemoveGateway
from ._mosquitto import MosquittoEnforcer, Reloader, RightsMode, mosquitto_config_lines, sighup_reloader
from ._names import (
    ANY,
    COMMAND,
    DATA,
    HANDSHAKE,
    PREFIX,
    USER,
    VERIFIED,
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

__all__ = [
    "ANY",
    "COMMAND",
    "DATA",
    "HANDSHAKE",
    "PREFIX",
    "USER",
    "VERIFIED",
    "AuthorizeGateway",
    "BrokerEnforcer",
    "BrokerError",
    "BrokerSecret",
    "Change",
    "CutOff",
    "Demote",
    "Enroll",
    "Grant",
    "InvalidIdentifier",
    "MosquittoEnforcer",
    "ReloadFailed",
    "Reloader",
    "RemoveGateway",
    "RightsMode",
    "UnknownDevice",
    "check_command",
    "check_device_id",
    "check_gateway_id",
    "check_stream",
    "command_topic",
    "data_topic",
    "every",
    "gateway_username",
    "handshake_down",
    "handshake_up",
    "mosquitto_config_lines",
    "mosquitto_sha512_hash",
    "sighup_reloader",
    "topic_filter",
    "verified_topic",
]
