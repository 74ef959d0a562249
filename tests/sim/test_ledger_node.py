"""The embedded ledger served over JSON-RPC: deploy, transactions, events and batches through RpcBackend."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger_bridge import Ledger, Role, RpcBackend, Signer
from ledger_bridge.enrollment import ProvisionedDevice

pytestmark = pytest.mark.asyncio
ETH = 10**18


def _post(url: str, body: object) -> object:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _start_node(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The node as its own process (as every user of it runs), on a free port."""
    ready = tmp / "url"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger_bridge.node",
            "--path",
            str(tmp / "chain.sqlite"),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the ledger node did not start"
        time.sleep(0.05)
    return proc, ready.read_text().strip()


async def test_deploy_transact_and_read_events_through_the_node(tmp_path):
    proc, url = _start_node(tmp_path)
    try:
        async with Ledger(backend=RpcBackend(url=url, name="node")) as ledger:
            admin, maker = Signer.generate(label="admin"), Signer.generate(label="manufacturer")
            for s in (admin, maker):
                await ledger.fund(s.address, 10 * ETH)  # anvil_setBalance, served by the faucet
            channel = await ledger.deploy(admin=admin)
            await ledger.actor(admin).grant_role(Role.MANUFACTURER, maker.address)
            devices = [
                ProvisionedDevice.generate(
                    model="m", serial=f"S{i}", firmware_hash=hashlib.sha256(b"fw").digest()
                )
                for i in range(3)
            ]
            await ledger.actor(maker).register_many([d.registration() for d in devices])
            history = await ledger.history(devices[0].device_id)
            assert [e.name for e in history] == ["DeviceRegistered"], history
            assert await ledger.block_number() >= 3
        # a second process would reattach by addresses: same node, same chain
        async with Ledger(backend=RpcBackend(url=url), channel=channel) as again:
            assert (await again.device(devices[1].device_id)).device_id == devices[1].device_id
        batch = _post(
            url,
            [
                {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
                {"jsonrpc": "2.0", "id": 3, "method": "no_such_method", "params": []},
            ],
        )
        assert isinstance(batch, list) and [a["id"] for a in batch] == [1, 2, 3]
        assert batch[0]["result"] == hex(1337)
        assert int(batch[1]["result"], 16) >= 3
        assert "error" in batch[2]
        assert "error" in _post(url, {"jsonrpc": "2.0", "id": 9})
        # the node holds the chain file's lock; SIGTERM closes it cleanly
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
