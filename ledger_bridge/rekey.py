"""The new owner's side of re-keying at transfer (docs/PROTOCOL.md 2.3), over any channel to the device.

    new_secret = await rekey_device(ledger, owner, device_id, secret=S, channel=...)

Reads the device's static X25519 public key and epoch from the chain, runs the exchange of
``device_agent.core.rekey`` through ``channel`` (``request(INIT) -> REPLY``, then ``send(CONFIRM)``),
and records the key confirmation on chain (``confirmRekey``: bumps the epoch, lifts the block on
authorizing gateways). A substituted key fails the device's confirmation tag: ``RekeyError``, nothing
recorded, S unchanged. Keep S until the device has authenticated under S' (if CONFIRM is lost, the
device still holds S and the exchange can be run again with it).
"""

from __future__ import annotations

import os
from typing import Protocol

from device_agent.agent.x25519 import x25519
from device_agent.core import rekey

from .actor import ActorHandle
from .ledger import Ledger

__all__ = ["RekeyChannel", "rekey_device"]


class RekeyChannel(Protocol):
    async def request(self, message: bytes) -> bytes: ...
    async def send(self, message: bytes) -> None: ...


async def rekey_device(
    ledger: Ledger, owner: ActorHandle, device_id: bytes, *, secret: bytes, channel: RekeyChannel
) -> bytes:
    """-> S' (32 bytes), after the device proved it holds the registered key and the chain recorded it."""
    public, _ = await ledger.device_key(device_id)
    if public == bytes(32):
        raise ValueError("the device has no registered device key: it cannot be re-keyed")
    _, epoch = await ledger.device_state(device_id)
    role = rekey.OwnerRekey(device_id, epoch, secret, public, x25519, os.urandom)
    confirm = role.reply(await channel.request(role.start()))
    await channel.send(confirm)
    new_secret: bytes | None = role.new_secret
    assert new_secret is not None
    await owner.confirm_rekey(device_id, rekey.key_commitment(new_secret))
    return new_secret
