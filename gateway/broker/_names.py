"""Identifiers and the topic layout the broker enforces (one place, shared with the gateway).

    diams/v1/hs/<gateway_id>/<device_id>/up     device publishes handshake messages
    diams/v1/hs/<gateway_id>/<device_id>/down   device subscribes to the gateway's answers
    diams/v1/d/<gateway_id>/<device_id>/<stream>  device publishes data (after authentication)
    diams/v1/c/<gateway_id>/<device_id>/<name>    device subscribes to commands (after authentication)
    diams/v1/v/<device_id>/<stream>             the gateway republishes verified data

Every identifier is checked against a strict pattern before it reaches a topic, a password-file line
or an ACL line: MQTT wildcards (``+ #``), level separators, ``$``, ``:``, whitespace and control
characters could otherwise widen a device's rights or inject a line into a file.
"""

from __future__ import annotations

import re

from ._errors import InvalidIdentifier

PREFIX = "diams/v1"

_DEVICE_ID = re.compile(r"[0-9a-f]{16}")
_GATEWAY_ID = re.compile(r"[a-z0-9-]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_GATEWAY_USER_PREFIX = "gateway-"


def _check(pattern: re.Pattern[str], value: object, what: str, rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidIdentifier(f"invalid {what} {shown}: must be {rule}")
    return value


def check_device_id(value: object) -> str:
    return _check(_DEVICE_ID, value, "device id", "16 lowercase hex characters")


def check_gateway_id(value: object) -> str:
    return _check(_GATEWAY_ID, value, "gateway id", "1-32 characters of [a-z0-9-]")


def check_stream(value: object) -> str:
    return _check(_NAME, value, "stream name", "1-64 characters of [A-Za-z0-9_-]")


def check_command(value: object) -> str:
    return _check(_NAME, value, "command name", "1-64 characters of [A-Za-z0-9_-]")


def gateway_username(gateway_id: str, connection: int = 0) -> str:
    """The broker username of a gateway's n-th connection (never a valid device id: it has a '-')."""
    check_gateway_id(gateway_id)
    if connection < 0:
        raise ValueError("connection index must be >= 0")
    base = _GATEWAY_USER_PREFIX + gateway_id
    return base if connection == 0 else f"{base}.{connection}"


def handshake_up(gateway_id: str, device_id: str) -> str:
    return f"{PREFIX}/hs/{check_gateway_id(gateway_id)}/{check_device_id(device_id)}/up"


def handshake_down(gateway_id: str, device_id: str) -> str:
    return f"{PREFIX}/hs/{check_gateway_id(gateway_id)}/{check_device_id(device_id)}/down"


def data_topic(gateway_id: str, device_id: str, stream: str) -> str:
    """Data travel to the gateway holding the session: several gateways may share one broker."""
    return f"{PREFIX}/d/{check_gateway_id(gateway_id)}/{check_device_id(device_id)}/{check_stream(stream)}"


def command_topic(gateway_id: str, device_id: str, name: str) -> str:
    return f"{PREFIX}/c/{check_gateway_id(gateway_id)}/{check_device_id(device_id)}/{check_command(name)}"


def verified_topic(device_id: str, stream: str) -> str:
    return f"{PREFIX}/v/{check_device_id(device_id)}/{check_stream(stream)}"
