"""An in-memory device-gateway pair for unit tests of the roles (no network, explicit clock)."""

import os

from device_agent.core import device, events, gateway, identity, keys


class Fleet:
    """Devices with real secrets and gateways with their own K_dg per device."""

    def __init__(self, gateways=(b"gw-a",), n_devices=1, epoch=0):
        self.fw = os.urandom(32)
        self.epoch = epoch
        self.secrets = {}
        self.entries = {g: {} for g in gateways}
        self.gateways = {}
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
    def device_ids(self):
        return list(self.secrets)

    def device(self, did, gw, epoch=None, fw=None):
        epoch = self.epoch if epoch is None else epoch
        k = keys.gateway_key(self.secrets[did], did, gw, epoch, fw or self.fw)
        return device.DeviceRole(did, gw, k, epoch)


def handshake(dev, gw_role, counter, now=0.0):
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


def authenticated(ev):
    return isinstance(ev, events.Authenticated)
