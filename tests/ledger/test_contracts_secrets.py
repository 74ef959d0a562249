"""Security: after a full lifecycle of many devices, no device secret, per-gateway key, broker password,
raw serial or MAC, unrevealed claim code, actor key or passphrase appears anywhere on chain: not in any
transaction's input, not in any event, not in any storage slot (anvil's full state dump).

Each secret is searched whole and as every 8-byte piece, so a value split across storage slots or
ABI words is still found.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator

import pytest

from device_agent.core.identity import (
    characteristics_commitment,
    claim_hash,
    derive_device_id,
    key_commitment,
)
from device_agent.core.keys import broker_password, gateway_key
from ledger_bridge import DeviceRegistration, Ledger, Role, RpcBackend, Signer
from ledger_bridge.sealing import GatewayKeys, seal

from .conftest import ETH

MODEL = "diams-sensor-v1"
FW1 = hashlib.sha256(b"firmware 1").digest()
FW2 = hashlib.sha256(b"firmware 2").digest()


def pieces(secret: bytes) -> Iterator[bytes]:
    yield secret
    for start in range(0, len(secret) - 7, 8):
        yield secret[start : start + 8]


@pytest.mark.asyncio
async def test_no_secret_reaches_the_chain(anvil_url: str) -> None:
    secrets: dict[str, bytes] = {}
    async with Ledger(backend=RpcBackend(url=anvil_url, name="anvil")) as ledger:
        start_block = await ledger.block_number()
        names = ("admin", "manufacturer", "owner", "new_owner", "maintainer", "operator", "gateway")
        signers = {n: Signer.generate(label=n) for n in names}
        for n, s in signers.items():
            await ledger.fund(s.address, 100 * ETH)
            secrets[f"private key of {n}"] = bytes(s._account.key)
        await ledger.deploy(admin=signers["admin"])
        a = {n: ledger.actor(s) for n, s in signers.items()}
        await a["admin"].grant_role(Role.MANUFACTURER, signers["manufacturer"].address)
        await a["admin"].grant_role(Role.MAINTAINER, signers["maintainer"].address)
        await a["admin"].grant_role(Role.OPERATOR, signers["operator"].address)

        devices = []
        for n in range(30):
            secret, serial, mac = os.urandom(32), f"SN-{os.urandom(6).hex()}", os.urandom(6)
            dev = derive_device_id(secret, MODEL, serial, mac)
            code, salt = os.urandom(16), os.urandom(16)
            devices.append((dev, secret, code))
            secrets[f"device secret {n}"] = secret
            secrets[f"serial {n}"] = serial.encode()
            secrets[f"mac {n}"] = mac
            secrets[f"salt {n}"] = salt
            secrets[f"claim code {n}"] = code
            secrets[f"broker password {n}"] = bytes.fromhex(broker_password(secret, dev, 0))
        await a["manufacturer"].register_many(
            [
                DeviceRegistration(
                    device_id=dev,
                    model=MODEL.encode().ljust(32, b"\0"),
                    firmware_hash=FW1,
                    characteristics=characteristics_commitment(
                        os.urandom(16), MODEL, f"x{i}", os.urandom(6), FW1
                    ),
                    claim_hash=claim_hash(dev, code),
                )
                for i, (dev, _, code) in enumerate(devices)
            ]
        )

        gw_id, gw_public = hashlib.sha256(b"gw-1").digest(), os.urandom(32)
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        from ledger_bridge.sealing import public_bytes

        gw_private = X25519PrivateKey.generate()
        gw_public = public_bytes(gw_private.public_key())
        await a["operator"].register_gateway(
            gw_id, x25519_public_key=gw_public, account=signers["gateway"].address
        )

        published: list[bytes] = []

        async def publish(dev: bytes, secret: bytes, epoch: int, fw: bytes, owner: str, n: int) -> None:
            k_dg = gateway_key(secret, dev, gw_id, epoch, fw)
            secrets[f"K_dg {n} epoch {epoch}"] = k_dg
            keys = GatewayKeys(k_dg=k_dg, broker_password=bytes.fromhex(broker_password(secret, dev, epoch)))
            secrets[f"broker password {n} epoch {epoch}"] = keys.broker_password
            sealed = seal(keys, gw_public, dev, gw_id, epoch)
            published.append(sealed)
            await a[owner].authorize_gateway(
                dev, gw_id, sealed_key=sealed, key_commitment=key_commitment(k_dg)
            )

        claimed = devices[:20]  # the last ten are never claimed: their codes must stay off chain
        for n, (dev, secret, code) in enumerate(claimed):
            await a["owner"].claim(dev, code)
            del secrets[f"claim code {n}"]  # revealed on chain by design when claiming
            await a["owner"].activate(dev)
            await publish(dev, secret, 0, FW1, "owner", n)
        for n, (dev, secret, _) in enumerate(claimed[:5]):
            await a["owner"].approve_maintainer(dev, signers["maintainer"].address)
            await a["maintainer"].record_firmware(dev, FW2)
            await publish(dev, secret, 1, FW2, "owner", n)
            await a["owner"].deauthorize_gateway(dev, gw_id)
            await publish(dev, secret, 2, FW2, "owner", n)
        for n, (dev, secret, _) in enumerate(claimed[5:10], start=5):
            await a["owner"].transfer(dev, signers["new_owner"].address)
            await a["new_owner"].accept_transfer(dev)
            await publish(dev, secret, 1, FW1, "new_owner", n)
        for dev, _, _ in claimed[10:13]:
            await a["owner"].revoke(dev)
        await a["gateway"].anchor(gw_id, merkle_root=os.urandom(32), count=20, first_seq=1, last_seq=20)

        # everything the chain holds
        def collect() -> tuple[list[bytes], list[bytes]]:
            w3 = ledger.w3
            blobs: list[bytes] = []
            storage: list[bytes] = []
            for number in range(start_block, w3.eth.block_number + 1):
                for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
                    blobs.append(bytes(tx["input"]))  # type: ignore[index]
            for log in w3.eth.get_logs({"fromBlock": start_block, "toBlock": "latest"}):
                blobs.append(bytes(log["data"]) + b"".join(bytes(t) for t in log["topics"]))
            dump = w3.provider.make_request("anvil_dumpState", [])["result"]  # type: ignore[arg-type]
            state = json.loads(gzip.decompress(bytes.fromhex(dump.removeprefix("0x"))))
            for account in state["accounts"].values():
                for slot, value in account.get("storage", {}).items():
                    storage.append(bytes.fromhex(slot.removeprefix("0x").rjust(64, "0")))
                    storage.append(bytes.fromhex(value.removeprefix("0x").rjust(64, "0")))
            return blobs + storage, storage

        blobs, storage = await ledger._run(collect)

    haystack = b"\n".join(blobs)
    assert len(blobs) > 300 and len(haystack) > 50_000  # the scan did see the chain
    # positive controls: what must be there is found the same way, in events and in storage
    assert any(claimed[0][0] in blob for blob in blobs)
    assert len(storage) > 300
    assert all(any(p in b"".join(storage) for p in pieces(sealed[:32])) for sealed in published[-3:])
    leaked = sorted(name for name, secret in secrets.items() if any(p in haystack for p in pieces(secret)))
    assert leaked == []
