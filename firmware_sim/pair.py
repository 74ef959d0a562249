"""An in-memory device-gateway pair over the protocol core (no network, explicit clock): for the unit
tests of the roles, the outage simulation and its bench."""

from __future__ import annotations

import os
from typing import Any

from device_agent.core import device, events, gateway, identity, keys


class Fleet:
    """Devices with real secrets and gateways with their own K_dg per device."""

    def __init__(self, gateways: tuple[bytes, ...] = (b"gw-a",), n_devices: int = 1, epoch: int = 0) -> None:
        self.fw = os.urandom(32)
        self.epoch = epoch
        self.secrets: dict[bytes, bytes] = {}
        self.entries: dict[bytes, dict[bytes, Any]] = {g: {} for g in gateways}
        self.gateways: dict[bytes, Any] = {}
        for i in range(n_devices):
            secret = os.urandom(32)
            did = identity.derive_device_id(secret, "model", f"SN{i}", os.urandom(6))
            self.secrets[did] = secret
            for g in gateways:
                k = keys.gateway_key(secret, did, g, epoch, self.fw)
                self.entries[g][did] = gateway.DeviceEntry(did, k, epoch, lifetime=60)
        for g in gateways:
            self.gateways[g] = gateway.GatewayRole(g, self.entries[g].get, os.urandom, proof_timeout=5.0)

    @property
    def device_ids(self) -> list[bytes]:
        return list(self.secrets)

    def device(self, did: bytes, gw: bytes, epoch: int | None = None, fw: bytes | None = None) -> Any:
        epoch = self.epoch if epoch is None else epoch
        k = keys.gateway_key(self.secrets[did], did, gw, epoch, fw or self.fw)
        return device.DeviceRole(did, gw, k, epoch)


def handshake(dev: Any, gw_role: Any, counter: int, now: float = 0.0) -> tuple[Any, Any]:
    """Run one handshake; -> (device event, gateway events of the last step)."""
    reply, gw_events = gw_role.receive(dev.device_id, dev.hello(counter, os.urandom(8)), now)
    if reply is None:
        return None, gw_events
    proof, ev = dev.receive(reply, now)
    if proof is None:
        return ev, gw_events
    result, gw_events = gw_role.receive(dev.device_id, proof, now)
    if result is None:
        return None, gw_events
    _, ev = dev.receive(result, now)
    return ev, gw_events


def authenticated(ev: object) -> bool:
    return isinstance(ev, events.Authenticated)
