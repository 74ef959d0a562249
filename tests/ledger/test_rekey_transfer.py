"""Re-keying at transfer end to end (issue 10, item 1): the chain, the new owner's tool
(ledger_bridge.rekey) and the real agent process (`diams-agent rekey`, hex lines over its stdin/stdout).

After acceptTransfer the chain refuses gateway authorizations until the new owner records a key
confirmation; the exchange replaces S by S' in the agent's key file; the previous owner, who knows S,
can neither pass for the device in the exchange nor authenticate under the new keys."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.agent.provision import provision
from device_agent.agent.x25519 import x25519
from device_agent.core import device, gateway, keys, rekey
from firmware_sim.pair import authenticated, handshake
from ledger_bridge import DeviceRegistration, LedgerRevert
from ledger_bridge.rekey import rekey_device

from .conftest import Actors
from .helpers import commitment, gateway_id, sealed_key

pytestmark = pytest.mark.asyncio
GW = b"gw-1"


class AgentChannel:
    """The new owner's side of the console: `diams-agent rekey` as a child process."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device_agent.agent.cli", "rekey", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def request(self, message: bytes) -> bytes:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(message.hex() + "\n")
        self.proc.stdin.flush()
        return bytes.fromhex(await asyncio.to_thread(self.proc.stdout.readline))

    def finish(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


class ImpostorChannel:
    """The previous owner on the path answers in the device's place: it knows S, not the device key."""

    def __init__(self, device_id: bytes, secret: bytes) -> None:
        self.role = rekey.DeviceRekey(device_id, secret, os.urandom(32), x25519, os.urandom)

    async def request(self, message: bytes) -> bytes:
        assert message[0] == rekey.INIT, "the owner must not confirm an impostor"
        return self.role.init(message)


def _provisioned(tmp_path: Path) -> tuple[Path, bytes, bytes, bytes, str]:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"firmware")
    done = provision(model="sensor", serial="SN1", mac="AA:BB:CC:DD:EE:01", firmware=fw, out=tmp_path / "dev")
    owner = json.loads(done.owner_file.read_text())
    made = subprocess.run(
        [sys.executable, "-m", "device_agent.agent.cli", "device-key", "--config", str(done.config_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    public = bytes.fromhex(made.stdout.strip())
    assert oct(os.stat(str(done.key_file) + ".x25519").st_mode & 0o777) == "0o600"
    return (
        done.config_file,
        bytes.fromhex(owner["device_id"]),
        bytes.fromhex(owner["secret"]),
        public,
        owner["claim_code"],
    )


async def _registered(ch: Actors, tmp_path: Path) -> tuple[Path, bytes, bytes, bytes, str, dict[str, str]]:
    """`_provisioned`, and the manufacturer registers the device from its record (not its key yet)."""
    config, did, secret, public, code = _provisioned(tmp_path)
    record = json.loads(next((tmp_path / "dev").glob("*[0-9a-f].json")).read_text())
    await ch.manufacturer.register_device(
        DeviceRegistration(
            device_id=did,
            model=b"sensor".ljust(32, b"\0"),
            firmware_hash=bytes.fromhex(record["firmware_hash"][2:]),
            characteristics=bytes.fromhex(record["characteristics"][2:]),
            claim_hash=bytes.fromhex(record["claim_hash"][2:]),
        )
    )
    return config, did, secret, public, code, record


@pytest.mark.parametrize("backend", ["eth-tester"], indirect=True)
async def test_transfer_rekey_and_the_previous_owner_is_out(channel: Actors, tmp_path: Path) -> None:
    ch = channel
    config, did, secret, public, code, record = await _registered(ch, tmp_path)
    with pytest.raises(LedgerRevert, match="NotManufacturer"):
        await ch.stranger.register_device_key(did, os.urandom(32))
    await ch.manufacturer.register_device_key(did, public)
    with pytest.raises(LedgerRevert, match="DeviceKeyExists"):
        await ch.manufacturer.register_device_key(did, os.urandom(32))
    await ch.owner.claim(did, code.encode())
    await ch.owner.activate(did)
    await ch.owner.transfer(did, ch.new_owner.address)
    await ch.new_owner.accept_transfer(did)
    assert await ch.ledger.device_key(did) == (public, True)

    gid = gateway_id(1)
    await ch.operator.register_gateway(gid, x25519_public_key=os.urandom(32), account=ch.gateway.address)
    sealed = sealed_key()
    with pytest.raises(LedgerRevert) as pending:  # no gateway before the re-key is confirmed
        await ch.new_owner.authorize_gateway(did, gid, sealed_key=sealed, key_commitment=commitment(sealed))
    assert pending.value.error == "RekeyPending" and "re-key it" in str(pending.value)

    # the previous owner answers in the device's place: detected, nothing recorded
    with pytest.raises(rekey.RekeyError, match="device_confirmation"):
        await rekey_device(ch.ledger, ch.new_owner, did, secret=secret, channel=ImpostorChannel(did, secret))
    assert await ch.ledger.device_key(did) == (public, True)
    # only the owner records a re-key
    with pytest.raises(LedgerRevert, match="NotOwner"):
        await ch.owner.confirm_rekey(did, os.urandom(32))

    # the real agent
    _, epoch_before = await ch.ledger.device_state(did)
    agent = AgentChannel(config)
    s2 = await rekey_device(ch.ledger, ch.new_owner, did, secret=secret, channel=agent)
    code_, err = agent.finish()
    assert code_ == 0, err
    assert "committed" in err and secret.hex() not in err and s2.hex() not in err
    key_file = next((tmp_path / "dev").glob("*.key"))
    assert bytes.fromhex(key_file.read_text().strip()) == s2 != secret
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert await ch.ledger.device_key(did) == (public, False)
    _, epoch = await ch.ledger.device_state(did)
    assert epoch == epoch_before + 1
    await ch.new_owner.authorize_gateway(did, gid, sealed_key=sealed, key_commitment=commitment(sealed))

    # under the new keys: the device authenticates, the previous owner (K_dg from S) does not
    fw = bytes.fromhex(record["firmware_hash"][2:])
    entry = gateway.DeviceEntry(did, keys.gateway_key(s2, did, GW, epoch, fw), epoch, lifetime=60)
    gw_role = gateway.GatewayRole(GW, {did: entry}.get, os.urandom, proof_timeout=5.0)
    ev, _ = handshake(
        device.DeviceRole(did, GW, keys.gateway_key(secret, did, GW, epoch, fw), epoch), gw_role, 1
    )
    assert not authenticated(ev)
    ev, _ = handshake(device.DeviceRole(did, GW, keys.gateway_key(s2, did, GW, epoch, fw), epoch), gw_role, 2)
    assert authenticated(ev)

    # and the previous owner cannot start another re-key: INIT keyed by S is refused, S' stays
    agent = AgentChannel(config)
    with pytest.raises((rekey.RekeyError, ValueError)):
        await rekey_device(ch.ledger, ch.owner, did, secret=secret, channel=agent)
    code_, err = agent.finish()
    assert code_ == 1 and "bad_init" in err
    assert bytes.fromhex(key_file.read_text().strip()) == s2


@pytest.mark.parametrize("backend", ["eth-tester"], indirect=True)
async def test_two_interrupted_exchanges_in_a_row_never_lock_the_device_out(
    channel: Actors, tmp_path: Path
) -> None:
    """The device commits S' but its DONE is lost; the retry (under S') is interrupted after REPLY, so
    the owner keeps S'' while the device still holds S'. The next retry must try S': the bundle keeps
    the secret the device answered the unfinished exchange under (``rekey_previous``), else its
    candidates would be S'' and S only, both refused: locked out. Real device console, real chain."""
    from firmware_sim.campaign_attacks import DeviceConsole
    from ledger_bridge.operations import OwnerBundle
    from ledger_bridge.rekey import RekeyTimeout

    ch = channel
    config, did, secret, public, code, _ = await _registered(ch, tmp_path)
    await ch.manufacturer.register_device_key(did, public)
    await ch.owner.claim(did, code.encode())
    await ch.owner.transfer(did, ch.new_owner.address)
    await ch.new_owner.accept_transfer(did)
    bundle = next((tmp_path / "dev").glob("*.owner.json"))
    key_file = next((tmp_path / "dev").glob("*.key"))

    def held() -> bytes:
        return bytes.fromhex(key_file.read_text().strip())

    async def exchange(kill: str | None) -> None:
        first, *earlier = OwnerBundle.load(bundle).rekey_candidates()  # as `diams-ledger rekey`
        async with DeviceConsole(config, kill_at=kill, timeout=5.0) as console:
            await rekey_device(
                ch.ledger, ch.new_owner, did, secret=first, channel=console, earlier=earlier,
                keep=lambda s, base: OwnerBundle.record_rekey(bundle, s, base),
            )  # fmt: skip

    with pytest.raises(RekeyTimeout, match="DONE lost"):
        await exchange("done_lost")
    s1 = OwnerBundle.load(bundle).rekeyed_secret
    assert held() == s1 and await ch.ledger.device_key(did) == (public, True)  # nothing recorded
    with pytest.raises(RekeyTimeout):
        await exchange("after_reply")
    after = OwnerBundle.load(bundle)
    assert held() == s1 != after.rekeyed_secret and after.rekey_previous == s1
    await exchange(None)
    final = OwnerBundle.load(bundle).rekeyed_secret
    assert held() == final and final not in (secret, s1)
    assert await ch.ledger.device_key(did) == (public, False)
