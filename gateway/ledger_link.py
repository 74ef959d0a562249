"""The gateway's way to its ledger: an unopened ``ledger_bridge.Ledger`` built from its settings.

Shared by the daemon (``service``), its preflight (``check-config``) and the CLI's ledger commands, so
that the preflight reaches the ledger exactly as ``run`` will.
"""

from __future__ import annotations

from ledger_bridge import Ledger, LedgerBackend

from .settings import LedgerSettings

__all__ = ["build_ledger"]


def build_ledger(s: LedgerSettings) -> Ledger:
    """An unopened ``ledger_bridge.Ledger`` for these settings (``async with`` it)."""
    from ledger_bridge import Channel, RpcBackend

    backend: LedgerBackend
    if s.mode == "rpc":
        backend = RpcBackend(url=s.url, name="rpc")
    else:
        from ledger_bridge.embedded import EmbeddedBackend

        assert s.path is not None
        backend = EmbeddedBackend(s.path)
    channel = Channel(registry=s.registry, auth_log=s.auth_log, deployed_block=s.deployed_block)
    return Ledger(backend=backend, channel=channel)
