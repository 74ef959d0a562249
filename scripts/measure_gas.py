"""Gas used per registry/audit-log operation on eth-tester, for the table in docs/LEDGER.md.

    .venv/bin/python scripts/measure_gas.py

Every operation is one transaction through the Python bridge (explicit gas from GAS_BUDGETS), on a
fresh channel; the figures are the receipts' gasUsed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from device_agent.core.identity import claim_hash
from ledger_bridge import DeviceRegistration, EthereumTesterBackend, Ledger, Role, Signer
from ledger_bridge.sealing import REKEY_SEALED_LEN, SEALED_LEN


def _reg(n: int) -> DeviceRegistration:
    dev = bytes([0xD0]) + n.to_bytes(7, "big")
    return DeviceRegistration(
        device_id=dev,
        model=b"sensor".ljust(32, b"\0"),
        firmware_hash=hashlib.sha256(b"fw").digest(),
        characteristics=hashlib.sha256(b"chars" + dev).digest(),
        claim_hash=claim_hash(dev, b"code-" + dev.hex().encode()),
    )


async def main() -> None:
    gas: dict[str, int] = {}
    async with Ledger(backend=EthereumTesterBackend()) as ledger:
        names = ("admin", "maker", "owner", "new", "maint", "op", "gw", "gw2")
        s = {n: Signer.generate(label=n) for n in names}
        for signer in s.values():
            await ledger.fund(signer.address, 10**20)
        channel = await ledger.deploy(admin=s["admin"])
        w3 = ledger.w3
        for name, block in (
            ("deploy DeviceRegistry", channel.deployed_block),
            ("deploy AuthenticationLog", None),
        ):
            number = block if block is not None else channel.deployed_block + 1
            [tx] = w3.eth.get_block(number)["transactions"]
            gas[name] = int(w3.eth.get_transaction_receipt(tx)["gasUsed"])  # type: ignore[arg-type]
        a = {n: ledger.actor(x) for n, x in s.items()}
        await a["admin"].grant_role(Role.MANUFACTURER, s["maker"].address)
        await a["admin"].grant_role(Role.OPERATOR, s["op"].address)
        await a["admin"].grant_role(Role.MAINTAINER, s["maint"].address)

        def note(name: str, outcome: object) -> None:
            gas[name] = outcome.gas_used  # type: ignore[attr-defined]

        r = _reg(1)
        dev = r.device_id
        note("registerDevice", await a["maker"].register_device(r))
        note("claim", await a["owner"].claim(dev, b"code-" + dev.hex().encode()))
        note("activate", await a["owner"].activate(dev))
        pid = hashlib.sha256(b"sensors").digest()
        note(
            "definePolicy",
            await a["owner"].define_policy(pid, publish=["telemetry", "status"], subscribe=["config"]),
        )
        note("setPolicy", await a["owner"].set_policy(dev, pid))
        shared = hashlib.sha256(b"shared").digest()
        await a["new"].define_policy(shared, publish=["telemetry"], subscribe=[])
        note("sharePolicy", await a["new"].share_policy(shared))
        from ledger_bridge import policy_key

        note("useSharedPolicy", await a["owner"].use_shared_policy(dev, policy_key(s["new"].address, shared)))
        gid = hashlib.sha256(b"gw").digest()
        note(
            "registerGateway",
            await a["op"].register_gateway(gid, x25519_public_key=os.urandom(32), account=s["gw"].address),
        )
        sealed = os.urandom(SEALED_LEN)
        note(
            "authorizeGateway",
            await a["owner"].authorize_gateway(dev, gid, sealed_key=sealed, key_commitment=os.urandom(32)),
        )
        note("cloneAlert", await a["gw"].clone_alert(dev, gid, counter=3))
        note(
            "anchor",
            await a["gw"].anchor(gid, merkle_root=os.urandom(32), count=10, first_seq=1, last_seq=10),
        )
        note("rotateGatewayKey", await a["op"].rotate_gateway_key(gid, x25519_public_key=os.urandom(32)))
        note("deauthorizeGateway", await a["owner"].deauthorize_gateway(dev, gid))
        await a["owner"].authorize_gateway(dev, gid, sealed_key=sealed, key_commitment=os.urandom(32))
        note("changeGatewayAccount", await a["op"].change_gateway_account(gid, s["gw2"].address))
        note("transfer", await a["owner"].transfer(dev, s["new"].address))
        note("acceptTransfer", await a["new"].accept_transfer(dev))
        note("removeGateway", await a["op"].remove_gateway(gid))
        r2 = _reg(2)
        await a["maker"].register_device(r2)
        note("registerDeviceKey", await a["maker"].register_device_key(r2.device_id, os.urandom(32)))
        await a["owner"].claim(r2.device_id, b"code-" + r2.device_id.hex().encode())
        await a["owner"].transfer(r2.device_id, s["new"].address)
        note("acceptTransfer (device key: re-key pending)", await a["new"].accept_transfer(r2.device_id))
        gid2 = hashlib.sha256(b"gw2").digest()
        await a["op"].register_gateway(gid2, x25519_public_key=os.urandom(32), account=s["gw2"].address)
        note(
            "startRekey (64-byte sealed password)",
            await a["new"].start_rekey(r2.device_id, gid2, os.urandom(REKEY_SEALED_LEN)),
        )
        note("confirmRekey", await a["new"].confirm_rekey(r2.device_id, os.urandom(32)))
        for n in (1, 100):  # registerDeviceKeyMany: per device = the receipt's gas / n
            regs = [_reg(1000 * n + i) for i in range(n)]
            await a["maker"].register_many(regs)
            [outcome] = await a["maker"].register_device_key_many(
                [r.device_id for r in regs], [os.urandom(32) for _ in regs]
            )
            gas[f"registerDeviceKeyMany, {n} device(s): whole transaction"] = outcome.gas_used
            gas[f"registerDeviceKeyMany, per device ({n} per transaction)"] = outcome.gas_used // n
    for name, used in gas.items():
        print(f"| {name} | {used:,} |")


if __name__ == "__main__":
    asyncio.run(main())
