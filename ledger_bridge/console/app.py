"""`diams-console`: the web console and REST API of one channel.

    diams-console --rpc http://127.0.0.1:8545 --channel channel.json --index console.sqlite \
        --audit-log /var/lib/diams-gateway/audit.log [--host 127.0.0.1 --port 8080]

Strategy: one aiohttp application; `pages.py` renders server-side HTML (Jinja2, a few lines of
JavaScript at most), `api.py` serves the same actions as JSON described by `/openapi.json`, and both call
`ConsoleService` (reads from the index, writes through `ledger_bridge.operations` as the signed-in actor).
The middleware here is the security boundary: sessions, CSRF, headers, and errors turned into answers
that never carry a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import LedgerError
from .context import SECURE, SERVICE, SESSION, SESSIONS
from .service import ConsoleService
from .sessions import COOKIE, SessionStore, same_token

log = logging.getLogger("diams.console")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    session_ttl_s: float = 1800.0
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _token(request: web.Request) -> tuple[str | None, bool]:
    """-> (session token, came from a Bearer header)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip(), True
    return request.cookies.get(COOKIE), False


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    token, bearer = _token(request)
    session = request.app[SESSIONS].get(token)
    request[SESSION] = session
    api = request.path.startswith("/api/")
    signing_in = request.path in ("/login", "/api/session") and request.method == "POST"
    if (
        request.method not in ("GET", "HEAD", "OPTIONS")
        and session is not None
        and not bearer
        and not signing_in
    ):
        # a browser sends the cookie by itself: the request must also prove it comes from our page
        if api:
            sent = request.headers.get("X-CSRF-Token")
        else:
            form = await request.post() if request.can_read_body else {}
            sent = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token")
        if not same_token(sent, session.csrf):
            return _error(request, 403, "missing or wrong CSRF token: reload the page and try again")
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except (LedgerError, ValueError) as exc:  # the actor's request was refused: say why, in words
        response = _error(request, 400 if isinstance(exc, ValueError) else 409, str(exc))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    )
    if session is not None:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/api/") or request.path == "/openapi.json":
        return web.json_response({"error": message}, status=status)
    from .pages import render

    return render(request, "error.html", {"status": status, "message": message}, status=status)


def create_app(
    service: ConsoleService, *, settings: ConsoleSettings | None = None, sessions: SessionStore | None = None
) -> web.Application:
    settings = settings or ConsoleSettings()
    app = web.Application(middlewares=[security], client_max_size=8 * 1024 * 1024)
    app[SERVICE] = service
    app[SESSIONS] = sessions or SessionStore(ttl_s=settings.session_ttl_s)
    app[SECURE] = settings.tls
    from . import api, pages

    api.add_routes(app)
    pages.add_routes(app)

    async def lifecycle(app: web.Application) -> Any:
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


# ---- the command ----
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diams-console", description="DIAMS web console and REST API")
    backend = p.add_mutually_exclusive_group(required=True)
    backend.add_argument("--rpc", metavar="URL", help="JSON-RPC endpoint of an EVM node")
    backend.add_argument("--embedded", metavar="PATH", help="durable in-process chain stored at PATH")
    p.add_argument("--channel", required=True, metavar="FILE", help="channel addresses (`deploy --out`)")
    p.add_argument("--index", required=True, metavar="FILE", help="the console's identity index (SQLite)")
    p.add_argument(
        "--audit-log",
        action="append",
        default=[],
        metavar="FILE",
        help="a gateway's audit log, for authentications, alerts and anchors (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks one)")
    p.add_argument("--session-ttl", type=float, default=1800.0, help="idle seconds before a session ends")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="and this private key (PEM)")
    p.add_argument("--url-file", type=Path, help="write the console's URL here once it listens")
    return p


async def serve(args: argparse.Namespace, *, ready: Callable[[str], None] | None = None) -> int:
    from ..backends import LedgerBackend, RpcBackend
    from ..index import IdentityIndex
    from ..ledger import Ledger
    from ..model import Channel

    settings = ConsoleSettings(
        host=args.host,
        port=args.port,
        session_ttl_s=args.session_ttl,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    raw = json.loads(Path(args.channel).read_text("utf-8"))
    channel = Channel(
        registry=raw["registry"], auth_log=raw["auth_log"], deployed_block=int(raw.get("deployed_block", 0))
    )
    backend: LedgerBackend
    if args.rpc:
        backend = RpcBackend(url=args.rpc)
    else:
        from ..embedded import EmbeddedBackend

        backend = EmbeddedBackend(Path(args.embedded))
    index = IdentityIndex(Path(args.index), start_block=channel.deployed_block)
    try:
        async with Ledger(backend=backend, channel=channel) as ledger:
            service = ConsoleService(ledger=ledger, index=index, audit_logs=[Path(p) for p in args.audit_log])
            app = create_app(service, settings=settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            context = None
            if settings.tls:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            url = f"{'https' if context else 'http'}://{settings.host}:{port}/"
            print(f"diams-console: {url}", flush=True)
            if args.url_file:
                args.url_file.write_text(url + "\n")
            if ready is not None:
                ready(url)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
    finally:
        index.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except (LedgerError, ValueError, OSError) as exc:
        print(f"diams-console: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
