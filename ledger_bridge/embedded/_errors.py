"""The embedded chain's exception: a :class:`ledger_bridge.errors.LedgerUnavailable`.

Errors of sqlite3 and py-evm that concern the chain's storage are turned into
:class:`EmbeddedChainError` where they leave this package. EVM outcomes (a revert, a bad nonce)
are not storage errors: they reach web3 the way eth-tester reports them, so the caller decodes
them like on any other backend.
"""

from __future__ import annotations

from ..errors import LedgerUnavailable


class EmbeddedChainError(LedgerUnavailable):
    """The embedded chain's file cannot be opened, read or committed, or is inconsistent.

    After a failed commit the in-memory chain is ahead of the file: the chain refuses further
    work and must be reopened, which resumes from the last committed block.
    """
