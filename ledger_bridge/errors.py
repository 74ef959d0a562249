"""The ledger bridge's exceptions; foreign errors (web3, eth-tester, sockets) end here.

    LedgerError
    ├── LedgerRevert          the chain refused a transaction or call; `.error` names the custom error
    ├── LedgerUnavailable     the node cannot be reached, timed out, or answered nonsense
    ├── ArtifactError         compiled contract artifacts are missing or malformed
    └── ChannelError          no channel attached, or the addresses hold no DIAMS contracts

    KeystoreError             a keystore, passphrase or claim-code file is missing, malformed, open to
                              others, or the passphrase is wrong: ``device_agent.private``'s, the one
                              error of every secret file (not a LedgerError: no ledger is involved)

Messages never carry secrets: no private key, passphrase or claim code is ever formatted into one.
"""

from __future__ import annotations

from typing import Any

from device_agent.private import KeystoreError

__all__ = [
    "ArtifactError",
    "ChannelError",
    "KeystoreError",
    "LedgerError",
    "LedgerRevert",
    "LedgerUnavailable",
]


class LedgerError(Exception):
    """Base of every error raised by ledger_bridge."""


class LedgerRevert(LedgerError):
    """The chain refused: `error` is the custom error's name, `args_by_name` its decoded arguments."""

    def __init__(self, message: str, *, error: str, args_by_name: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.args_by_name: dict[str, Any] = dict(args_by_name or {})


class LedgerUnavailable(LedgerError):
    """The backend (node, embedded chain) cannot be reached or did not answer in time."""


class ArtifactError(LedgerError):
    """Compiled contract artifacts are missing or malformed."""


class ChannelError(LedgerError):
    """No channel is attached, or its addresses do not hold the DIAMS contracts."""
