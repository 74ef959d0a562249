"""The enforcement package's exceptions.

    BrokerError                  anything this package raises on purpose
    ├── InvalidIdentifier        (also ValueError) a device/gateway id, stream or command name is malformed
    ├── UnknownDevice            (also KeyError) rights granted to a device that was never enrolled
    └── ReloadFailed             the files could not be written or the broker could not be told to reload
        └── UnsafeBroker         the broker's version is known to be crashable or bypassable (or unknown)

Messages name the offending identifier but never a credential.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error raised by ``gateway.broker``."""


class InvalidIdentifier(BrokerError, ValueError):
    """An identifier that would be unsafe in a topic, a password file line or an ACL line."""


class UnknownDevice(BrokerError, KeyError):
    """The change needs a device that is not enrolled."""

    def __str__(self) -> str:  # KeyError would quote the repr of the args
        return str(self.args[0]) if self.args else "unknown device"


class ReloadFailed(BrokerError):
    """Writing the access files or signalling the broker failed; the change is not live."""


class UnsafeBroker(ReloadFailed):
    """The running broker is a version access control cannot rely on; the message says what to install."""
