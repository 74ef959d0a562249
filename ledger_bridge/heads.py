"""New-block notifications over WebSocket JSON-RPC (``eth_subscribe("newHeads")``).

Polling costs a round trip per interval and adds up to one interval of latency to every ledger
change; a node that speaks WebSocket (anvil, geth, Besu) announces each block as it is made, so the
identity index can sync at once. ``HeadWatcher`` reconnects by itself; polling stays as the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("diams.ledger.heads")


class HeadWatcher:
    def __init__(self, ws_url: str, on_head: Callable[[int], None], *, reconnect_delay: float = 1.0) -> None:
        if not ws_url.startswith(("ws://", "wss://")):
            raise ValueError("HeadWatcher needs a ws:// or wss:// URL")
        self.ws_url = ws_url
        self.on_head = on_head
        self.reconnect_delay = reconnect_delay
        self.connected = asyncio.Event()
        self.heads = 0

    def __repr__(self) -> str:
        return f"HeadWatcher({self.ws_url.split('@')[-1]})"

    async def run(self) -> None:
        """Watch until cancelled, reconnecting after any failure."""
        from web3 import AsyncWeb3, WebSocketProvider

        while True:
            try:
                async with AsyncWeb3(WebSocketProvider(self.ws_url)) as w3:
                    await w3.eth.subscribe("newHeads")
                    self.connected.set()
                    async for message in w3.socket.process_subscriptions():
                        self.heads += 1
                        self.on_head(int(message["result"]["number"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("block notifications unavailable (%s); retrying", type(exc).__name__)
            self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)
