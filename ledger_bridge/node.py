"""A loopback JSON-RPC node over an :class:`~ledger_bridge.embedded.EmbeddedChain`, so several processes
share one embedded ledger.

    python -m ledger_bridge.node --path run/ledger.sqlite --port 8545        # or: diams-ledger node ...

Every process then uses ``RpcBackend("http://127.0.0.1:8545")`` as it would with anvil or geth.

Strategy: the embedded chain takes an exclusive file lock, so exactly one process may open it; this
process is that one. Requests (single or batch, ``POST /``) are translated from the JSON-RPC wire
format into eth-tester's Python values with web3's own eth-tester formatters, run on the chain's
synchronous provider in a worker thread (the chain serialises calls itself), and the answers are
translated back to the wire format (camelCase keys, hex quantities). A call that reverts answers as
geth and anvil do (code 3, the revert bytes in ``data``), so clients decode custom errors by name.
``anvil_setBalance`` is served from the chain's faucet, so ``RpcBackend.fund`` works as it does on
anvil (the balance can only grow).
The node listens on loopback by default: it has no authentication, like a development node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from web3.providers.eth_tester.middleware import request_formatters, result_formatters

from .embedded import EmbeddedChain, EmbeddedChainError
from .reverts import revert_data_of

__all__ = ["LedgerNode", "main", "to_wire"]

log = logging.getLogger("diams.ledger.node")

MAX_BODY = 16 * 1024 * 1024
_INVALID_REQUEST = -32600
_PARSE_ERROR = -32700
_INTERNAL = -32603
_REVERTED = 3  # geth's and anvil's code for "execution reverted", with the revert bytes in `data`


def to_wire(value: Any) -> Any:
    """eth-tester's Python values -> JSON-RPC wire values (ints as hex quantities, bytes as hex)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


class LedgerNode:
    """Serves ``chain`` on ``host:port`` until :meth:`stop`. ``async with LedgerNode(...) as node:``."""

    def __init__(self, chain: EmbeddedChain, *, host: str = "127.0.0.1", port: int = 8545) -> None:
        self.chain = chain
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"LedgerNode({self.url}, {self.chain!r})"

    async def start(self) -> LedgerNode:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        log.info("ledger node on %s serving %s", self.url, self.chain.path)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LedgerNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.json_response(_error(None, _PARSE_ERROR, "parse error"))
        if isinstance(body, list):
            if not body:
                return web.json_response(_error(None, _INVALID_REQUEST, "empty batch"))
            answers = [await asyncio.to_thread(self.call, item) for item in body]
            return web.json_response(answers)
        return web.json_response(await asyncio.to_thread(self.call, body))

    def call(self, item: Any) -> dict[str, Any]:
        """One JSON-RPC request object -> its response object (blocking; runs in a worker thread)."""
        self.requests += 1
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return _error(None, _INVALID_REQUEST, "invalid request")
        rid, method, params = item.get("id"), item["method"], item.get("params") or []
        try:
            if method == "anvil_setBalance":
                self._set_balance(params)
                return {"jsonrpc": "2.0", "id": rid, "result": None}
            formatter: Callable[..., Any] | None = request_formatters.get(method)
            if formatter is not None:
                params = formatter(params)
            answer: dict[str, Any] = dict(self.chain.provider.make_request(method, params))
        except EmbeddedChainError as exc:
            log.error("embedded chain: %s", exc)
            return _error(rid, _INTERNAL, f"embedded chain: {exc}")
        except Exception as exc:  # a revert, or a bad parameter shape: neither may take the node down
            data = revert_data_of(exc)
            if data is not None:  # as geth and anvil answer: code 3 with the revert data, so names survive
                error = {"code": _REVERTED, "message": "execution reverted", "data": "0x" + data.hex()}
                return {"jsonrpc": "2.0", "id": rid, "error": error}
            return _error(rid, _INVALID_REQUEST, f"{type(exc).__name__}: {exc}")
        answer["id"] = rid
        if "result" in answer:
            result = answer["result"]
            formatter = (result_formatters or {}).get(method)
            if formatter is not None:
                result = formatter(result)
            answer["result"] = to_wire(result)
        return answer

    def _set_balance(self, params: list[Any]) -> None:
        address, target = str(params[0]), int(str(params[1]), 16)
        current = self.chain.provider.make_request("eth_getBalance", [address, "latest"])  # type: ignore[arg-type]
        missing = target - int(current["result"])
        if missing > 0:
            self.chain.fund(address, missing)


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", type=Path, required=True, help="the embedded chain file (created if new)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8545, help="port to listen on (default 8545)")
    parser.add_argument("--chain-id", type=int, default=None, help="chain id of a new chain file")
    parser.add_argument(
        "--ready-file", type=Path, default=None, help="written with the URL once the node answers"
    )


async def serve(args: argparse.Namespace) -> int:
    chain = await asyncio.to_thread(EmbeddedChain.open, args.path, chain_id=args.chain_id, faucet=True)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with LedgerNode(chain, host=args.host, port=args.port) as node:
            if args.ready_file is not None:
                args.ready_file.write_text(node.url + "\n")
            print(f"ledger node listening on {node.url}", file=sys.stderr, flush=True)
            await stop.wait()
    finally:
        chain.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger_bridge.node", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args))
    except EmbeddedChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
