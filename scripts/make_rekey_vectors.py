"""Writes tests/vectors/rekey_transcript.json: one re-keying exchange with fixed inputs, byte for byte.

    .venv/bin/python scripts/make_rekey_vectors.py

Checked on CPython (tests/core/test_rekey.py) and under MicroPython (tests/micropython/test_mpy_rekey.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from device_agent.agent.x25519 import x25519
from device_agent.core import rekey


def _fixed(label: str, n: int) -> bytes:
    return hashlib.sha256(b"diams rekey vector " + label.encode()).digest()[:n]


def main() -> None:
    x = x25519
    inputs = {
        "device_id": _fixed("device id", 8),
        "secret": _fixed("S", 32),
        "device_static_private": _fixed("device static", 32),
        "epoch": 5,
        "owner_ephemeral_private": _fixed("owner ephemeral", 32),
        "owner_nonce": _fixed("owner nonce", 16),
        "device_ephemeral_private": _fixed("device ephemeral", 32),
        "device_nonce": _fixed("device nonce", 16),
    }
    i = inputs
    owner_random = iter([i["owner_ephemeral_private"], i["owner_nonce"]])
    device_random = iter([i["device_ephemeral_private"], i["device_nonce"]])
    public = x(i["device_static_private"], b"\x09" + bytes(31))
    owner = rekey.OwnerRekey(i["device_id"], i["epoch"], i["secret"], public, x, lambda n: next(owner_random))
    device = rekey.DeviceRekey(
        i["device_id"], i["secret"], i["device_static_private"], x, lambda n: next(device_random)
    )
    init = owner.start()
    reply = device.init(init)
    confirm = owner.reply(reply)
    new_secret = device.confirm(confirm)
    assert new_secret == owner.new_secret
    done = device.done()
    owner.done(done)
    out = {
        "about": "device_agent/core/rekey.py, docs/PROTOCOL.md section 2.3; hex unless a number",
        "inputs": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in inputs.items()},
        "device_static_public": public.hex(),
        "init": init.hex(),
        "reply": reply.hex(),
        "confirm": confirm.hex(),
        "new_secret": new_secret.hex(),
        "done": done.hex(),
        # the same construction keyed from S instead of S' (what a previous owner can make): refused
        "done_from_s": (bytes((rekey.DONE,)) + rekey._done_tag(i["secret"], owner._t)).hex(),
        "rekey_commitment": rekey.key_commitment(new_secret).hex(),
    }
    path = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "rekey_transcript.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
