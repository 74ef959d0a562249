"""Which mosquitto versions the gateway agrees to enforce access on.

Mosquitto before 2.0.21 (Debian 12 ships 2.0.11) can be crashed before authentication: one *refused*
CONNECT that reuses a connected client's id leaves the broker pointing at freed memory; after the next
SIGHUP reload (the enforcer sends one at every enrolment or cut-off) the next message routed to that
client segfaults the broker, and the same sequence with a device's id keeps a revoked device connected
(a cut-off bypass). The enforcer reads the running broker's version from ``$SYS/broker/version`` at
every reload proof (see ``_canary``) and refuses to go on with an older or unreadable one.
"""

from __future__ import annotations

import re

from ._errors import UnsafeBroker

MIN_SAFE_VERSION = (2, 0, 21)
INSTALL_HINT = (
    "install mosquitto >= 2.0.21 (Debian 12: add the bookworm-backports suite, then "
    "'apt-get install -t bookworm-backports mosquitto'; scripts/bootstrap.sh does this)"
)
_VERSION = re.compile(r"mosquitto version (\d+)\.(\d+)\.(\d+)")


def parse_mosquitto_version(text: str) -> tuple[int, int, int] | None:
    """``"mosquitto version 2.0.21"`` (the payload of ``$SYS/broker/version``) -> (2, 0, 21)."""
    found = _VERSION.fullmatch(text.strip())
    if found is None:
        return None
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def check_mosquitto_version(text: str | None) -> tuple[int, int, int]:
    """The version in ``text`` when it is safe to enforce on; else raise ``UnsafeBroker``."""
    if text is None:
        raise UnsafeBroker(
            "could not read the broker's version from $SYS/broker/version (is sys_interval 0, or is "
            "this not mosquitto?) nor from its log (with retain_available false, $SYS keeps no version: "
            "set enforcement.broker_log); refusing to enforce access on an unknown broker: "
            f"{INSTALL_HINT}"
        )
    version = parse_mosquitto_version(text)
    if version is None:
        shown = text.strip()[:60]
        raise UnsafeBroker(f"unrecognised broker version {shown!r}; refusing to enforce: {INSTALL_HINT}")
    if version < MIN_SAFE_VERSION:
        raise UnsafeBroker(
            "mosquitto %d.%d.%d can be crashed before authentication and lets a revoked device stay "
            "connected (a refused CONNECT reusing a client id, then a reload); refusing to enforce access: "
            "%s" % (*version, INSTALL_HINT)
        )
    return version
