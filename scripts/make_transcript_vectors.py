"""Regenerate tests/vectors/handshake_transcript.json: a complete handshake with fixed inputs.

The file pins the wire bytes, so any change to the codec or key schedule shows up as a test failure
on CPython and MicroPython alike. Run it only when the protocol version changes on purpose.
"""

import json
from pathlib import Path

from device_agent.core import device, gateway, identity, keys

SECRET = bytes(range(32))
FW = bytes(range(100, 132))
SALT = bytes(range(16))
MODEL, SERIAL, MAC = "rpi4-sensor", "SN-000042", bytes.fromhex("b827eb123456")
GW = b"gw-paris-1"
EPOCH, COUNTER = 3, 17
D_NONCE, G_NONCE = bytes.fromhex("0102030405060708"), bytes.fromhex("a1a2a3a4a5a6a7a8")


def build() -> dict:
    did = identity.derive_device_id(SECRET, MODEL, SERIAL, MAC)
    kdg = keys.gateway_key(SECRET, did, GW, EPOCH, FW)
    entry = gateway.DeviceEntry(did, kdg, EPOCH, counter=COUNTER - 1, lifetime=600)
    gw = gateway.GatewayRole(GW, {did: entry}.get, lambda n: G_NONCE)
    dev = device.DeviceRole(did, GW, kdg, EPOCH)
    hello = dev.hello(COUNTER, D_NONCE)
    challenge, _ = gw.receive(did, hello, 0.0)
    proof, _ = dev.receive(challenge, 0.0)
    result, events = gw.receive(did, proof, 0.0)
    _, done = dev.receive(result, 0.0)
    data = done.session.seal(b"telemetry", b'{"t":21.5}')
    command = events[0].session.seal(b"config", b"interval=60")
    return {
        "inputs": {"secret": SECRET.hex(), "firmware_hash": FW.hex(), "salt": SALT.hex(), "model": MODEL,
                   "serial": SERIAL, "mac": MAC.hex(), "gateway_id": GW.decode(), "epoch": EPOCH,
                   "counter": COUNTER, "device_nonce": D_NONCE.hex(), "gateway_nonce": G_NONCE.hex(),
                   "lifetime": 600, "claim_code": "0011223344556677"},
        "device_id": did.hex(),
        "characteristics_commitment": identity.characteristics_commitment(SALT, MODEL, SERIAL, MAC, FW).hex(),
        "claim_hash": identity.claim_hash(did, bytes.fromhex("0011223344556677")).hex(),
        "gateway_key": kdg.hex(),
        "key_commitment": identity.key_commitment(kdg).hex(),
        "hello": hello.hex(), "challenge": challenge.hex(), "proof": proof.hex(), "result": result.hex(),
        "data_telemetry": data.hex(), "command_config": command.hex(),
    }


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "handshake_transcript.json"
    out.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {out}")
