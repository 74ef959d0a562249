"""The campaign's attacks beyond the simulator's scenarios: each one ends in an ``AttackOutcome``.

Strategy: every attack here judges itself from what the system did, never from what the attacker
intended: a chain transaction that reverted, a broker that refused a login, the verified topics an
application sees, the gateway's readiness and metrics, HTTP status codes. Helpers that need no site
(``fuzz_requests``, ``http_status``) are pure, so tests check them without running a campaign
(tests/sim/test_campaign_attacks.py).

- ``previous_owner``: the owner transfers a device and the new owner accepts; the previous owner, who
  still holds the device's secret and broker password, then tries to steer it on chain (revoke, policy,
  gateway authorization) and to authenticate as it. Every attempt must be refused.
- ``preauth_sequences``: what a stranger can do before any authentication: anonymous and wrong-password
  logins, and the refused anonymous CONNECT that reuses a connected client's id (the gateway's and a
  device's) followed by the broker's SIGHUP reload, which crashed mosquitto < 2.0.21 and let a removed
  device stay connected (FACTS.md). The broker must refuse each login and survive the reload.
- ``data_flood``: an authenticated device sends valid, MAC'd data as fast as it can. The gateway must
  pass at most its burst plus its rate, end the session (the next message is answered "no session"),
  and stay ready.
- ``api_fuzz``: malformed and random HTTP requests to the console's API (signed in and not) and to the
  gateway's metrics endpoint. No request may get a 5xx, and both must still answer afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from device_agent.core import events

from .invariants import AttackOutcome

__all__ = ["fuzz_requests", "http_status", "refused_connect"]

# Paths the fuzzer starts from: the console's API and pages, the gateway's HTTP endpoints.
CONSOLE_PATHS = (
    "/",
    "/login",
    "/openapi.json",
    "/api/session",
    "/api/channel",
    "/api/dashboard",
    "/api/devices",
    "/api/devices/{id}",
    "/api/devices/{id}/history",
    "/api/devices/{id}/actions/revoke",
    "/api/devices/{id}/actions/suspend",
    "/api/devices/{id}/recover",
    "/api/devices/{id}/gateways",
    "/api/jobs/register",
    "/api/jobs/onboard",
    "/api/jobs/{id}",
    "/api/gateways",
    "/api/gateways/{id}",
    "/api/policies",
    "/api/policies/{id}",
    "/api/audit/anchors",
    "/api/audit/inclusion",
)
GATEWAY_PATHS = ("/metrics", "/readyz", "/healthz", "/")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "GE\x00T", "X" * 40)
_IDS = (
    "0011223344556677",
    "zz",
    "",
    "%00",
    "..%2f..%2fetc%2fpasswd",
    "-1",
    "9" * 80,
    "\u00e9\u00e9",
    "{}",
    "0x" + "ff" * 8,
    "%ZZ",
)
_BODIES: tuple[Any, ...] = (
    {},
    [],
    None,
    "text",
    0,
    {"device_id": 1},
    {"device_id": "zz", "gateway": None},
    {"keystore": "x", "passphrase": 5},
    {"keystore": {"crypto": {}}, "passphrase": "p"},
    {"serials": ["A" * 10_000]},
    {"policy_id": [1, 2, 3], "publish": {"a": "b"}},
    {"leaf": "zz", "gateway": "gw-demo"},
)


def fuzz_requests(rng: random.Random, n: int, paths: Sequence[str], host: str) -> list[bytes]:
    """``n`` raw HTTP/1.1 requests, most of them malformed in one way or another; every one of them is a
    complete request (a server that waits for more bytes is not at fault)."""
    out = []
    for _ in range(n):
        path = rng.choice(paths).replace("{id}", rng.choice(_IDS))
        kind = rng.randrange(10)
        if kind == 0:
            path += "?" + "&".join(f"{rng.choice(_IDS)}={rng.choice(_IDS)}" for _ in range(rng.randint(1, 8)))
        elif kind == 1:
            path = path + "/" + "a" * rng.randint(100, 6000)
        elif kind == 2:
            path = path.replace("/", "//")
        method = rng.choice(METHODS)
        body_kind = rng.randrange(5)
        if body_kind == 0:
            body = b""
        elif body_kind == 1:
            body = json.dumps(rng.choice(_BODIES)).encode()
        elif body_kind == 2:
            body = rng.randbytes(rng.randint(1, 2000))
        elif body_kind == 3:
            body = b'{"a":' * rng.randint(1, 3000)  # deep, unterminated JSON
        else:
            body = b"device_id=%s&csrf=&action=revoke" % rng.choice(_IDS).encode("utf-8", "replace")
        ctype = rng.choice(
            ("application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain", "")
        )
        headers = [f"Host: {host}", "Connection: close"]
        if ctype:
            headers.append(f"Content-Type: {ctype}")
        if rng.random() < 0.3:
            headers.append(f"Authorization: Bearer {rng.choice(_IDS)}")
        if rng.random() < 0.2:
            headers.append(f"Cookie: diams_session={rng.choice(_IDS)}")
        if rng.random() < 0.1:
            headers.append("X-CSRF-Token: " + "A" * rng.randint(0, 300))
        headers.append(f"Content-Length: {len(body)}")
        head = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n"
        out.append(head.encode("utf-8", "replace") + body)
    return out


def http_status(response: bytes) -> int | None:
    """The status code of a raw HTTP response, or None when there was no status line."""
    line = response.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


async def _send_raw(host: str, port: int, request: bytes, timeout: float = 10.0) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


async def fuzz_http(
    host: str, port: int, requests: Sequence[bytes], *, bearer: str | None = None
) -> dict[str, int]:
    """Send each request; -> counts by outcome ("2xx".."5xx", "no_status", "reset")."""
    counts: dict[str, int] = {}
    for raw in requests:
        if bearer is not None and b"Authorization:" not in raw:
            raw = raw.replace(b"\r\n", f"\r\nAuthorization: Bearer {bearer}\r\n".encode(), 1)
        try:
            status = http_status(await _send_raw(host, port, raw))
        except (OSError, ConnectionError, TimeoutError):
            key = "reset"
        else:
            key = "no_status" if status is None else f"{status // 100}xx"
        counts[key] = counts.get(key, 0) + 1
    return counts


async def sign_in(console_url: str, keystore: Path, passphrase: Path) -> str | None:
    """A console session's bearer token for one actor's keystore, or None."""
    host, port = _host_port(console_url)
    body = json.dumps(
        {"keystore": json.loads(keystore.read_text()), "passphrase": passphrase.read_text().strip()}
    ).encode()
    raw = (
        f"POST /api/session HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with contextlib.suppress(OSError, ConnectionError, TimeoutError, ValueError):
        response = await _send_raw(host, port, raw, timeout=60)
        if http_status(response) == 200:
            token = json.loads(response.split(b"\r\n\r\n", 1)[1]).get("token")
            return str(token) if token else None
    return None


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port)


async def api_fuzz(
    rng: random.Random, *, console_url: str, keys: Path, gateway_port: int, n: int = 300
) -> AttackOutcome:
    details = []
    server_errors = 0
    alive = True
    targets: list[tuple[str, int, Sequence[str], str | None]] = [
        ("127.0.0.1", gateway_port, GATEWAY_PATHS, None)
    ]
    if console_url:
        token = await sign_in(console_url, keys / "operator.json", keys / "operator.passphrase")
        host, port = _host_port(console_url)
        targets += [(host, port, CONSOLE_PATHS, None), (host, port, CONSOLE_PATHS, token)]
        if token is None:
            details.append("could not sign in to the console (fuzzed unsigned only)")
    else:
        details.append("no console running: the gateway's endpoint only")
    for host, port, paths, bearer in targets:
        counts = await fuzz_http(host, port, fuzz_requests(rng, n, paths, f"{host}:{port}"), bearer=bearer)
        server_errors += counts.get("5xx", 0)
        who = "gateway" if port == gateway_port else ("console signed in" if bearer else "console")
        details.append(f"{who}: {n} requests {dict(sorted(counts.items()))}")
        try:  # it must still answer a well-formed request
            status = http_status(
                await _send_raw(
                    host, port, f"GET {paths[0]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
            )
        except (OSError, ConnectionError, TimeoutError):
            status = None
        if status is None or status >= 500:
            alive = False
            details.append(f"{who} no longer answers ({status})")
    return AttackOutcome(
        name="api_fuzz",
        held=server_errors == 0 and alive,
        detail="; ".join(details) + f"; {server_errors} 5xx",
    )


def refused_connect(
    host: str, port: int, client_id: str, username: str | None = None, password: str = ""
) -> int:
    """One MQTT 3.1.1 CONNECT (anonymous, or with a username and password); -> the CONNACK code
    (0 accepted), or -1 when the broker closed the connection without one."""
    flags = 0x02
    payload = struct.pack("!H", len(client_id)) + client_id.encode()
    if username is not None:
        flags |= 0xC0
        payload += struct.pack("!H", len(username)) + username.encode()
        payload += struct.pack("!H", len(password)) + password.encode()
    body = struct.pack("!H", 4) + b"MQTT" + bytes([4, flags]) + struct.pack("!H", 60) + payload
    length = len(body)
    encoded = b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"\x10" + encoded + body)
        try:
            connack = sock.recv(4)
        except (TimeoutError, ConnectionError):
            return -1
    return connack[3] if len(connack) == 4 else -1


async def preauth_sequences(
    *, host: str, port: int, broker: Any, gateway_client_id: str, device_ids: Sequence[str], after: Any
) -> AttackOutcome:
    """``after``: an async callable -> (bool, str): does the site still serve the honest fleet?"""
    codes = {
        "anonymous": await asyncio.to_thread(refused_connect, host, port, "stranger-" + os.urandom(4).hex()),
        "wrong password": await asyncio.to_thread(
            refused_connect, host, port, device_ids[0], device_ids[0], "not-the-password"
        ),
        "gateway's id, anonymous": await asyncio.to_thread(refused_connect, host, port, gateway_client_id),
        "device's id, anonymous": await asyncio.to_thread(refused_connect, host, port, device_ids[-1]),
        "gateway's account, no password": await asyncio.to_thread(
            refused_connect, host, port, "x-" + os.urandom(4).hex(), gateway_client_id, ""
        ),
    }
    accepted = [k for k, c in codes.items() if c == 0]
    broker.reload()  # the SIGHUP the enforcer sends at every enrolment and cut-off
    await asyncio.sleep(1.0)
    survived = broker.running
    served, how = await after()
    held = not accepted and survived and served
    return AttackOutcome(
        name="preauth_sequences",
        held=held,
        detail=f"CONNACK codes {codes}; broker {'survived' if survived else 'DIED'} the reload; {how}",
    )


async def data_flood(
    site: Any, *, seconds: float, rate: float, burst: int, seen: Any, ready: Any
) -> AttackOutcome:
    """``seen(hex) -> int``: messages of that device on verified topics so far; ``ready()`` -> bool."""
    (identity,) = site.take(1)
    dev = site.device(identity)
    if not await site.connect(dev) or not isinstance(await site.authenticate(dev), events.Authenticated):
        return AttackOutcome(
            name="data_flood", held=False, detail="the flooding device could not authenticate"
        )
    before = seen(dev.hex)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and dev.client is not None and dev.client.is_open and dev.session:
        for _ in range(100):
            dev.send_data("telemetry", b'{"flood":%d}' % sent)
            sent += 1
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - t0
    await asyncio.sleep(2.0)
    passed = seen(dev.hex) - before
    bound = burst + rate * (elapsed + 2.0) + 10
    ok_ready = await ready()
    # the gateway ended the session: one more message is answered "no session"
    signals = dev.stats.no_session_signals
    if dev.session is not None and dev.client is not None and dev.client.is_open:
        dev.send_data("telemetry", b"{}")
        await asyncio.sleep(1.0)
    ended = dev.stats.no_session_signals > signals or dev.session is None
    # or, past the session's end, the pre-authentication allowance ran out and the broker banned the
    # device (defence.preauth_*): its connection is closed, which stops the flood at the broker
    banned = dev.client is None or not dev.client.is_open
    with contextlib.suppress(Exception):
        await dev.close()
    return AttackOutcome(
        name="data_flood",
        held=passed <= bound and ok_ready and (ended or banned),
        detail=(
            f"{sent} valid messages in {elapsed:.1f} s, {passed} passed (bound {bound:.0f}); "
            f"gateway ready {ok_ready}; device's session ended {ended}; connection closed by the "
            f"broker {banned}"
        ),
    )


async def previous_owner(
    site: Any, *, ledger: Any, owner: Any, policy_id: bytes, gateway_id: bytes, settle_s: float = 3.0
) -> AttackOutcome:
    """The owner hands a device over; the previous owner keeps what it knew and tries to keep control."""
    from ledger_bridge.errors import LedgerError
    from ledger_bridge.keystore import Signer

    (identity,) = site.take(1)
    dev = site.device(identity)
    if not await site.connect(dev) or not isinstance(await site.authenticate(dev), events.Authenticated):
        return AttackOutcome(
            name="previous_owner", held=False, detail="the device did not authenticate first"
        )
    signer = Signer.generate(label="new-owner")
    await ledger.fund(signer.address, 10**18)
    new_owner = ledger.actor(signer)
    did = dev.device_id
    await owner.transfer(did, signer.address)
    await new_owner.accept_transfer(did)
    t_transfer = time.monotonic()
    steered = []
    attempts: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("revoke", lambda: owner.revoke(did)),
        ("suspend", lambda: owner.suspend(did)),
        ("set its policy", lambda: owner.set_policy(did, policy_id)),
        ("take it back", lambda: owner.transfer(did, owner.address)),
        ("deauthorize a gateway", lambda: owner.deauthorize_gateway(did, gateway_id)),
    ]
    for what, call in attempts:
        try:
            await call()
        except LedgerError:
            continue
        steered.append(what)
    # the device's old credentials (which the previous owner knows) no longer open a session
    await asyncio.sleep(max(0.0, settle_s - (time.monotonic() - t_transfer)))
    sessions = 0
    tries = 0
    with contextlib.suppress(Exception):
        await dev.close()
    for _ in range(3):
        tries += 1
        try:
            await dev.connect(timeout=5)
            result = await dev.authenticate(timeout=3)
        except Exception:  # noqa: S112 - any refusal (login refused, connection closed) is a refusal
            continue
        finally:
            with contextlib.suppress(Exception):
                await dev.close()
        sessions += isinstance(result, events.Authenticated)
    return AttackOutcome(
        name="previous_owner",
        held=not steered and sessions == 0,
        detail=(
            f"previous owner's chain calls accepted: {steered or 'none'}; "
            f"{sessions} sessions in {tries} tries with the old credentials {settle_s:g} s after the transfer"
        ),
    )


# ---- a device killed in the middle of a re-key -------------------------------------------------------

REKEY_KILL_POINTS = ("after_init", "after_reply", "after_confirm", "done_lost")


class DeviceConsole:
    """The device's side of a re-key as its console runs it: ``diams-agent rekey --config`` (hex lines
    over stdin/stdout; the real agent code reading and replacing its key file), a channel for the owner's
    ``ledger_bridge.rekey.rekey_device``. ``kill_at`` kills it (SIGKILL) at that point of the exchange;
    ``done_lost`` lets it commit S' and answer DONE, which is then lost on the way."""

    def __init__(self, config: Path, *, kill_at: str | None = None, timeout: float = 15.0) -> None:
        if kill_at is not None and kill_at not in REKEY_KILL_POINTS:
            raise ValueError(f"kill_at must be one of {REKEY_KILL_POINTS}, got {kill_at!r}")
        self.config, self.kill_at, self.timeout = config, kill_at, timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.killed = False

    async def __aenter__(self) -> DeviceConsole:
        import sys

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device_agent.agent.cli", "rekey", "--config", str(self.config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def _kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # kill -9: nothing of the exchange survives but what the device wrote to disk
        await self.proc.wait()
        self.killed = True

    async def _write(self, message: bytes) -> None:
        from ledger_bridge.rekey import RekeyTimeout

        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(message.hex().encode() + b"\n")
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise RekeyTimeout("the device's console is gone") from None

    async def request(self, message: bytes) -> bytes:
        from device_agent.core.rekey import CONFIRM
        from ledger_bridge.rekey import RekeyTimeout

        confirm = message[:1] == bytes((CONFIRM,))
        if self.proc is not None and self.proc.returncode is not None and not self.killed and not confirm:
            await self.__aenter__()  # it refused an INIT and exited: the console prompts again
        assert self.proc is not None and self.proc.stdout is not None
        await self._write(message)
        if self.kill_at == "after_init" and not confirm:
            await self._kill()
        if self.kill_at == "after_confirm" and confirm:  # the device may or may not have committed
            await self._kill()
        what = "DONE" if confirm else "REPLY"
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.timeout)
        except TimeoutError:
            raise RekeyTimeout(f"no {what} in time") from None
        if not line.strip():
            await self.proc.wait()
            raise RekeyTimeout(f"the device closed the exchange without a {what}")
        if self.kill_at == "after_reply" and not confirm:  # it waits for CONFIRM, S' in memory only
            await self._kill()
        if self.kill_at == "done_lost" and confirm:  # committed and answered; the answer never arrives
            await self._kill()
            raise RekeyTimeout("DONE lost")
        return bytes.fromhex(line.decode().strip())


async def mid_rekey(
    rng: random.Random,
    *,
    ledger: Any,
    manufacturer: Any,
    owner: Any,
    gateway: Any,
    policy_id: bytes,
    work: Path,
    kill_at: str | None = None,
) -> AttackOutcome:
    """A device transferred and re-keyed by its new owner is killed at a random point of the exchange,
    then restarted; the new owner retries as its tool does. The device must end holding the secret the
    new owner holds and the chain confirmed (never locked out), and the previous owner (S) gets nothing.

    The exchange runs over the device's console (``diams-agent rekey``), not MQTT: between
    acceptTransfer and confirmRekey the device has no broker login unless enrolled by hand."""
    from device_agent.agent.keystore import load_secret
    from device_agent.agent.provision import provision
    from device_agent.agent.x25519 import x25519
    from device_agent.core import rekey as core_rekey
    from device_agent.private import write_private
    from ledger_bridge.firmware import device_from_owner_bundle
    from ledger_bridge.keystore import Signer
    from ledger_bridge.operations import OwnerBundle
    from ledger_bridge.rekey import RekeyTimeout, rekey_device

    kill_at = kill_at or rng.choice(REKEY_KILL_POINTS)
    work.mkdir(parents=True, exist_ok=True)
    firmware = work / "firmware.bin"
    firmware.write_bytes(b"campaign re-key firmware")
    n = len([p for p in work.iterdir() if p.is_dir()])
    made = await asyncio.to_thread(
        provision, model="diams-sensor", serial=f"RK{n:04d}", mac=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
        firmware=firmware, out=work / f"device-{n}", gateways=(gateway.gateway_id.decode(),),
    )  # fmt: skip
    bundle_raw = json.loads(made.owner_file.read_text())
    identity = device_from_owner_bundle(bundle_raw)
    did = identity.device_id
    old_secret = identity.secret
    device_key = bytes.fromhex(made.record.device_key.removeprefix("0x"))
    await onboard_one(manufacturer, owner, identity, gateway, policy_id, device_key)
    signer = Signer.generate(label="rekey-new-owner")
    await ledger.fund(signer.address, 10**18)
    new_owner = ledger.actor(signer)
    await owner.transfer(did, signer.address)
    await new_owner.accept_transfer(did)
    bundle = work / f"device-{n}" / "new-owner.json"
    write_private(bundle, made.owner_file.read_bytes())  # handed over with the device

    def keep(s: bytes, held: bytes) -> None:
        OwnerBundle.record_rekey(bundle, s, held)

    async def exchange(kill: str | None) -> tuple[str, DeviceConsole]:
        # what `diams-ledger rekey` uses: S' once kept, the secret the device answered that under, S
        first, *earlier = OwnerBundle.load(bundle).rekey_candidates()
        async with DeviceConsole(made.config_file, kill_at=kill) as console:
            try:
                await rekey_device(
                    ledger, new_owner, did, secret=first, channel=console, keep=keep, earlier=earlier,
                )  # fmt: skip
            except (RekeyTimeout, core_rekey.RekeyError) as exc:
                return f"{type(exc).__name__}: {exc}", console
        return "re-keyed", console

    first, console = await exchange(kill_at)
    mid_state = "S" if load_secret(made.key_file).reveal() == old_secret else "S'"
    retries = []
    for _ in range(2):  # the new owner runs its command again (the device restarted)
        outcome, _ = await exchange(None)
        retries.append(outcome)
        if outcome == "re-keyed":
            break
    held_secret = load_secret(made.key_file).reveal()
    owner_secret = OwnerBundle.load(bundle).device().current_secret
    _, pending = await ledger.device_key(did)
    in_step = held_secret == owner_secret and not pending and held_secret != old_secret
    # the previous owner, holding S, tries to start a re-key of its own: the device must refuse it
    _, epoch = await ledger.device_state(did)
    previous = core_rekey.OwnerRekey(did, epoch, old_secret, bytes(32), x25519, os.urandom)
    async with DeviceConsole(made.config_file) as device_console:
        from ledger_bridge.rekey import RekeyTimeout as _Timeout

        try:
            await device_console.request(previous.start())
            previous_refused = False
        except _Timeout:
            previous_refused = True
    previous_refused = previous_refused and load_secret(made.key_file).reveal() == held_secret
    return AttackOutcome(
        name="mid_rekey",
        held=console.killed and in_step and previous_refused,
        detail=(
            f"device killed {kill_at.replace('_', ' ')} ({'killed' if console.killed else 'NOT killed'}; "
            f"first exchange: {first}; the device then held {mid_state}); owner's retries: "
            f"{', '.join(retries) or 'none'}; device and owner hold the same new secret: "
            f"{held_secret == owner_secret and held_secret != old_secret}, "
            f"re-key pending on chain: {pending}; previous owner's INIT refused: {previous_refused}"
        ),
    )


async def onboard_one(
    manufacturer: Any, owner: Any, identity: Any, gateway: Any, policy_id: bytes, device_key: bytes
) -> None:
    """What the manufacturer's ``register --csv`` (with the device key) and the owner's onboarding do."""
    from ledger_bridge.enrollment import sealed_grants
    from ledger_bridge.index import onchain_gateway_id

    did = identity.device_id
    await manufacturer.register_many([identity.registration()])
    await manufacturer.register_device_key(did, device_key)
    await owner.onboard_many([did], [identity.claim_code], policy_id)
    boxes, commitments = sealed_grants([identity], gateway, 0)
    await owner.authorize_gateway_many(
        onchain_gateway_id(gateway.gateway_id),
        device_ids=[did],
        sealed_keys=boxes,
        key_commitments=commitments,
    )
