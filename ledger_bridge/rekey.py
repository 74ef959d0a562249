"""The new owner's side of re-keying at transfer (docs/PROTOCOL.md 2.3), over MQTT or any other channel.

    new_secret = await rekey_device(ledger, owner, device_id, secret=S, channel=...)

Reads the device's static X25519 public key and epoch from the chain, runs the exchange of
``device_agent.core.rekey`` through ``channel`` (``request(INIT) -> REPLY``, then
``request(CONFIRM) -> DONE``), and records the key confirmation on chain (``confirmRekey``: bumps the
epoch, ends the re-key window, lifts the block on authorizing gateways) only once DONE verifies: DONE
is the device's proof that it has stored S'. A substituted key fails the device's confirmation tag
(``RekeyError``, nothing recorded, S unchanged); a DONE that does not verify (forged from S, or another
run's) is ``RekeyError("bad_done")``, nothing recorded. Whatever stops the exchange before DONE
(the device killed before or after its commit, a lost CONFIRM or DONE), the chain still says the re-key
is pending, the window stays open, and the retry reaches the device under the secret it holds: S' first,
then the one it answered the interrupted exchange under (``keep`` records both).

The device reaches its re-key topics during the window only through the gateway the new owner names
(``start_rekey``: ``startRekey`` on chain, with the device's broker password from S sealed to that
gateway): no gateway may be authorized before the re-key, so nothing else gives the device a broker
account. ``rekey_device(..., carrier=G)`` names G first when the chain says the re-key is pending.

``MqttRekeyChannel`` is the channel to a running agent: INIT and CONFIRM on the device's re-key
``down`` topic under gateway G, REPLY and DONE from its ``up`` topic (``device_agent.core.topics``),
through the site's broker with gateway G's account, the one account besides the device's own that the
broker's ACL lets use them (gateway/broker). ``diams-ledger rekey`` is the owner's one command for all of it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from device_agent.agent.x25519 import x25519
from device_agent.core import keys, rekey
from device_agent.core import topics as _topics

from .actor import ActorHandle
from .index import onchain_gateway_id
from .ledger import Ledger
from .model import TxOutcome
from .sealing import seal_rekey_password

__all__ = [
    "MqttRekeyChannel",
    "RekeyChannel",
    "RekeyTimeout",
    "rekey_device",
    "start_rekey",
    "window_password",
]

_T: Any = _topics


class RekeyChannel(Protocol):
    """``request(message) -> the device's answer``: REPLY to INIT, DONE to CONFIRM; ``RekeyTimeout``
    when none comes."""

    async def request(self, message: bytes) -> bytes: ...


class RekeyTimeout(Exception):
    """The device did not answer in time (not connected, no device key, it refused INIT, or it did not
    prove its commit of S')."""


def window_password(secret: bytes, device_id: bytes, epoch: int) -> bytes:
    """The broker password the device logs in with during the re-key window, as 16 bytes: derived from S
    (it holds only S until CONFIRM) by the device's own derivation, ``keys.broker_password``, for the
    chain's epoch at ``startRekey`` (the epoch the box is sealed for). The one place the owner computes it."""
    return bytes.fromhex(keys.broker_password(secret, device_id, epoch))


async def start_rekey(
    ledger: Ledger, owner: ActorHandle, device_id: bytes, gateway_id: bytes, *, secret: bytes
) -> TxOutcome:
    """Name gateway ``gateway_id`` (protocol form, e.g. b"gw-1") to carry the re-key: the device's broker
    password from S, sealed to that gateway's registered key for the current epoch, goes on chain."""
    record = await ledger.gateway(onchain_gateway_id(gateway_id))
    if record.removed:
        raise ValueError(f"gateway {gateway_id.decode(errors='replace')} was removed")
    _, epoch = await ledger.device_state(device_id)
    sealed = seal_rekey_password(
        window_password(secret, device_id, epoch), record.x25519_public_key, device_id, gateway_id, epoch
    )
    return await owner.start_rekey(device_id, onchain_gateway_id(gateway_id), sealed)


async def rekey_device(
    ledger: Ledger,
    owner: ActorHandle,
    device_id: bytes,
    *,
    secret: bytes,
    channel: RekeyChannel,
    keep: Callable[[bytes, bytes], None] | None = None,
    earlier: Sequence[bytes] = (),
    carrier: bytes | None = None,
) -> bytes:
    """-> S' (32 bytes), after the device proved it holds the registered key and has stored S' (DONE),
    and the chain recorded it.

    ``keep(S', held)`` runs before CONFIRM leaves, so S' is stored before the device can switch to it;
    ``held`` is the secret the device answered INIT under: until DONE the device holds S' or ``held``.
    ``earlier``: secrets the device may still hold, tried in turn (each with its own INIT) when it does
    not answer the one before. An exchange interrupted before DONE verified (the device killed before or
    after its commit, CONFIRM or DONE lost) records nothing: the re-key window stays open and the retry,
    given S' and ``held``, reaches the device whichever it holds. ``RekeyTimeout`` when no DONE comes.
    ``carrier``: the gateway (protocol form) whose broker account ``channel`` uses; while the re-key is
    pending it is named on chain first (``start_rekey``) with the login of the secret being tried, so that
    it gives the device its re-key login."""
    public, pending = await ledger.device_key(device_id)
    if public == bytes(32):
        raise ValueError("the device has no registered device key: it cannot be re-keyed")
    _, epoch = await ledger.device_state(device_id)
    candidates = [secret, *(s for s in earlier if s != secret)]
    for n, candidate in enumerate(candidates):
        if pending and carrier is not None:  # the device logs in with the password of the secret it holds
            await start_rekey(ledger, owner, device_id, carrier, secret=candidate)
        role = rekey.OwnerRekey(device_id, epoch, candidate, public, x25519, os.urandom)
        try:
            answer = await channel.request(role.start())
            break
        except RekeyTimeout:  # a device holding another secret refuses INIT silently
            if n == len(candidates) - 1:
                raise
    confirm = role.reply(answer)
    new_secret: bytes | None = role.new_secret
    assert new_secret is not None
    if keep is not None:
        keep(new_secret, candidate)
    role.done(await channel.request(confirm))  # the device has stored S': only now end the window
    await owner.confirm_rekey(device_id, rekey.key_commitment(new_secret))
    return new_secret


class MqttRekeyChannel:
    """The exchange over the broker, with gateway ``gateway_id``'s account (paho, its own loop thread).

    Use as ``with MqttRekeyChannel(...) as ch:``; ``request`` waits ``timeout`` seconds for the REPLY to
    INIT (the DONE to CONFIRM), sending the same message again every ``resend`` seconds meanwhile: the
    device may log in only once the gateway has seen ``startRekey`` and given it its re-key account, and
    the agents answer a repeated INIT with the same REPLY, a repeated CONFIRM with the same DONE.
    Messages are QoS 1, retain 0 (PROTOCOL.md 6); an answer of the wrong shape is skipped, not trusted
    (the exchange's tags decide)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        gateway_id: str,
        device_id: bytes,
        username: str,
        password: str,
        tls_ca: Path | None = None,
        timeout: float = 30.0,
        resend: float = 1.0,
    ) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self._down = str(_T.rekey_down(gateway_id, device_id.hex()))
        self._up = str(_T.rekey_up(gateway_id, device_id.hex()))
        self._host, self._port, self._timeout, self._resend = host, port, timeout, resend
        self._answers: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311)
        self._client.username_pw_set(username, password)
        if tls_ca is not None:
            self._client.tls_set_context(ssl.create_default_context(cafile=str(tls_ca)))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_socket_open = self._on_socket_open

    def __repr__(self) -> str:
        return f"MqttRekeyChannel({self._down} @ {self._host}:{self._port})"

    @staticmethod
    def _on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._ready.put(f"the broker refused the login ({reason})")
        else:
            client.subscribe(self._up, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        failed = any(getattr(r, "is_failure", False) for r in reasons)
        self._ready.put("the broker refused the subscription" if failed else "")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        payload = bytes(msg.payload)
        if msg.topic == self._up and (len(payload), payload[:1]) in _ANSWERS.values():
            self._answers.put(payload)

    def __enter__(self) -> MqttRekeyChannel:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            where = f"{self._host}:{self._port}"
            raise ConnectionError(f"broker {where} unreachable: {exc.strerror or exc}") from None
        self._client.loop_start()
        try:
            problem = self._ready.get(timeout=self._timeout)
        except queue.Empty:
            problem = "no answer from the broker"
        if problem:
            self.__exit__()
            raise ConnectionError(f"broker {self._host}:{self._port}: {problem}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def request(self, message: bytes) -> bytes:
        shape = _ANSWERS.get(message[:1])
        if shape is None:
            raise ValueError("only INIT and CONFIRM are requests")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while (left := deadline - loop.time()) > 0:
            info = self._client.publish(self._down, message, qos=1)
            await asyncio.to_thread(info.wait_for_publish, left)
            resend = loop.time() + min(self._resend, left)
            while (wait := resend - loop.time()) > 0:
                try:
                    answer = await asyncio.to_thread(self._answers.get, True, wait)
                except queue.Empty:
                    break
                if (len(answer), answer[:1]) == shape:
                    return answer  # (a late repeat of the other kind is skipped)
        if message[0] == rekey.INIT:
            raise RekeyTimeout(
                f"no REPLY within {self._timeout:.0f} s: is the agent connected to this broker, with its "
                "device key, and does it still hold the secret given?"
            )
        raise RekeyTimeout(
            f"no DONE within {self._timeout:.0f} s: the device did not prove that it stored the new secret "
            "(killed, or its answer lost); nothing was recorded on chain and the re-key window stays "
            "open: run the same command again (it tries the new secret, then the one before)"
        )


# what the device answers each request with: (length, type byte)
_ANSWERS = {
    bytes((rekey.INIT,)): (rekey.REPLY_LEN, bytes((rekey.REPLY,))),
    bytes((rekey.CONFIRM,)): (rekey.DONE_LEN, bytes((rekey.DONE,))),
}
