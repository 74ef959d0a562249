"""Identifiers and topics as the broker enforces them: the protocol core's topic module, with this
package's error type.

The layout and the identifier rules live once, in ``device_agent.core.topics`` (its header draws the
six topic forms). Every identifier is checked before it reaches a topic, a password-file line or an
ACL line: MQTT wildcards (``+ #``), level separators, ``$``, ``:``, whitespace and control characters
could otherwise widen a device's rights or inject a line into a file. This module re-exports the
builders under the names the broker package uses, raising ``InvalidIdentifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from device_agent.core import topics as _topics

from ._errors import InvalidIdentifier

_T: Any = _topics
PREFIX: str = _T.PREFIX
ANY: str = _T.ANY
USER: str = _T.USER
HANDSHAKE: str = _T.HANDSHAKE
DATA: str = _T.DATA
COMMAND: str = _T.COMMAND
VERIFIED: str = _T.VERIFIED
REKEY: str = _T.REKEY
UP: str = _T.UP
DOWN: str = _T.DOWN
_GATEWAY_USER_PREFIX = "gateway-"


def _checked(fn: Callable[..., Any], *args: Any) -> str:
    try:
        return str(fn(*args))
    except ValueError as exc:
        raise InvalidIdentifier(str(exc)) from None


def check_device_id(value: object) -> str:
    return _checked(_T.check_device_id, value)


def check_gateway_id(value: object) -> str:
    return _checked(_T.check_gateway_id, value)


def check_stream(value: object) -> str:
    return _checked(_T.check_name, value, "stream name")


def check_command(value: object) -> str:
    return _checked(_T.check_name, value, "command name")


def gateway_username(gateway_id: str, connection: int = 0) -> str:
    """The broker username of a gateway's n-th connection (never a valid device id: it has a '-')."""
    check_gateway_id(gateway_id)
    if connection < 0:
        raise ValueError("connection index must be >= 0")
    base = _GATEWAY_USER_PREFIX + gateway_id
    return base if connection == 0 else f"{base}.{connection}"


def handshake_up(gateway_id: str, device_id: str) -> str:
    return _checked(_T.handshake_up, gateway_id, device_id)


def handshake_down(gateway_id: str, device_id: str) -> str:
    return _checked(_T.handshake_down, gateway_id, device_id)


def data_topic(gateway_id: str, device_id: str, stream: str) -> str:
    """Data travel to the gateway holding the session: several gateways may share one broker."""
    return _checked(_T.data, gateway_id, device_id, stream)


def command_topic(gateway_id: str, device_id: str, name: str) -> str:
    return _checked(_T.command, gateway_id, device_id, name)


def verified_topic(gateway_id: str, device_id: str, stream: str) -> str:
    return _checked(_T.verified, gateway_id, device_id, stream)


def topic_filter(kind: str, gateway_id: str = ANY, device_id: str = ANY, last: str = ANY) -> str:
    """A filter or ACL topic: identifiers, ``ANY`` ("+"), or ``USER`` ("%u") as the device."""
    return _checked(_T.topic_filter, kind, gateway_id, device_id, last)


def every(kind: str | None = None) -> str:
    """The multi-level filter of one topic kind (or of every DIAMS topic)."""
    return _checked(_T.every, kind)
