"""The embedded chain as a :class:`ledger_bridge.backends.LedgerBackend`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from web3 import Web3

from ._chain import EmbeddedChain


class EmbeddedBackend:
    """Opens (or creates) the durable embedded chain at ``path`` and a ``Web3`` on it.

    Keyword settings are those of :meth:`EmbeddedChain.open`; the faucet is on by default so that
    :meth:`fund` can pay gas for actors created after genesis.
    """

    name = "embedded"

    def __init__(
        self,
        path: str | Path,
        *,
        chain_id: int | None = None,
        funded: Iterable[str | bytes] = (),
        faucet: bool = True,
    ) -> None:
        self.path = Path(path)
        self._chain_id = chain_id
        self._funded = tuple(funded)
        self._faucet = faucet
        self._chain: EmbeddedChain | None = None

    @property
    def chain(self) -> EmbeddedChain | None:
        """The open chain, or None before :meth:`open` and after :meth:`close`."""
        return self._chain

    def open(self) -> Web3:
        if self._chain is None:
            self._chain = EmbeddedChain.open(
                self.path, chain_id=self._chain_id, funded=self._funded, faucet=self._faucet
            )
        return Web3(self._chain.provider)

    def close(self) -> None:
        if self._chain is not None:
            self._chain.close()
            self._chain = None

    def fund(self, w3: Web3, address: str, wei: int) -> None:
        if self._chain is None:
            self.open()
        assert self._chain is not None
        self._chain.fund(address, wei)

    def __repr__(self) -> str:
        return f"EmbeddedBackend(path={str(self.path)!r})"
