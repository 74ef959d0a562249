"""Protocol core figures: handshake bytes, and the gateway role's CPU throughput on one core.

gateway_core_handshakes_per_s: the gateway role alone (no network, no device work in the timed
loop) verifying complete handshakes: HELLO -> CHALLENGE, PROOF -> RESULT, for 10,000 devices.
The device messages are prepared beforehand by replaying the same gateway nonces (drawn from
os.urandom up front, as the daemon's buffered CSPRNG does), then a fresh gateway is timed.
"""

from __future__ import annotations

import os
import time

from device_agent.core import device, gateway, identity, keys

GW = b"gw-bench"


def _fleet(n: int) -> tuple[list[device.DeviceRole], dict[bytes, bytes]]:
    fw = os.urandom(32)
    devs, kdgs = [], {}
    for _ in range(n):
        secret = os.urandom(32)
        did = identity.derive_device_id(secret, "bench", os.urandom(6).hex(), os.urandom(6))
        kdgs[did] = keys.gateway_key(secret, did, GW, 0, fw)
        devs.append(device.DeviceRole(did, GW, kdgs[did], 0))
    return devs, kdgs


def _gateway(kdgs: dict[bytes, bytes], nonces: list[bytes]) -> gateway.GatewayRole:
    entries = {d: gateway.DeviceEntry(d, k, 0) for d, k in kdgs.items()}
    it = iter(nonces)
    return gateway.GatewayRole(GW, entries.get, lambda n: next(it), max_pending=len(kdgs) + 1)


def run() -> dict[str, float]:
    n = 10_000
    devs, kdgs = _fleet(n)
    nonces = [os.urandom(8) for _ in range(n)]
    prep = _gateway(kdgs, nonces)
    hellos, proofs = [], []
    sizes = [0, 0, 0, 0]
    for i, d in enumerate(devs):
        h = d.hello(1, os.urandom(8))
        c, _ = prep.receive(d.device_id, h, 0.0)
        p, _ = d.receive(c, 0.0)
        r, ev = prep.receive(d.device_id, p, 0.0)
        assert type(ev[0]).__name__ == "Authenticated", ev
        hellos.append((d.device_id, h))
        proofs.append((d.device_id, p))
        if i == 0:
            sizes = [len(h), len(c), len(p), len(r)]
    best = 0.0
    for _ in range(3):
        gw = _gateway(kdgs, nonces)
        recv = gw.receive
        t0 = time.perf_counter()
        for did, h in hellos:
            recv(did, h, 0.0)
        for did, p in proofs:
            recv(did, p, 0.0)
        elapsed = time.perf_counter() - t0
        if gw.pending:  # a PROOF that failed would leave its handshake pending
            raise RuntimeError(f"{gw.pending} handshakes did not complete")
        best = max(best, n / elapsed)
    return {
        "handshake_payload_bytes_total": float(sum(sizes)),
        "handshake_bytes_hello": float(sizes[0]),
        "handshake_bytes_challenge": float(sizes[1]),
        "handshake_bytes_proof": float(sizes[2]),
        "handshake_bytes_result": float(sizes[3]),
        "gateway_core_handshakes_per_s": round(best, 1),
    }
