"""``enforcement.peer_gateways``: two gateway daemons on one Mosquitto, one managing the broker's files.

The managing gateway renders the password and ACL files whole from its own table; without the peer's
accounts in that table its first rewrite would lock the peer (and the peer's devices' handshake topics)
out of the broker. Checked on the real broker: the files are rewritten by a gateway built from its
settings, the peer logs in again and serves a device, also while the managing gateway is down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device_agent.core import events
from firmware_sim.device import SimDevice
from firmware_sim.inproc import Site, site, start_gateway, stop_gateway
from gateway.mqtt import MqttClient, MqttConnectError
from gateway.preflight import ConfigurationError, read_application_password
from gateway.settings import EnforcementSettings, SettingsError

MOSQUITTO = {
    "mode": "mosquitto",
    "password_file": Path("/p"),
    "acl_file": Path("/a"),
    "pid_file": Path("/pid"),
}


def test_peer_gateways_are_id_equals_password_file() -> None:
    e = EnforcementSettings(**MOSQUITTO, peer_gateways=" gw-b=/etc/diams/gw-b.password ")  # type: ignore[arg-type]
    assert e.peer_gateway_files() == {"gw-b": Path("/etc/diams/gw-b.password")}


@pytest.mark.parametrize("value", ["gw-b", "=/p", "GW-B=/p", "gw-b=", "gw-b=/p,gw-b=/q"])
def test_bad_peer_entries_are_refused_with_the_key_named(value: str) -> None:
    with pytest.raises(SettingsError, match=r"enforcement\.peer_gateways"):
        EnforcementSettings(**MOSQUITTO, peer_gateways=value)  # type: ignore[arg-type]


def test_peer_gateways_need_the_mosquitto_enforcer() -> None:
    with pytest.raises(SettingsError, match="mode = 'mosquitto'"):
        EnforcementSettings(mode="none", peer_gateways="gw-b=/p")


def test_a_peer_password_is_read_like_the_gateways_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "gw-b.password"
    path.write_text("short")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError, match=r"enforcement.peer_gateways \(gw-b\).*at least 16") as err:
        read_application_password("gw-b", path, "peer_gateways")
    assert "short" not in str(err.value)


async def _login(s: Site, gateway_id: str) -> bool:
    user = f"gateway-{gateway_id}"
    try:
        c = await MqttClient.connect(
            "127.0.0.1",
            s.broker.port,
            client_id=f"{user}.probe",
            username=user,
            password=s.secrets[gateway_id],
        )
    except MqttConnectError:
        return False
    await c.close()
    return True


async def _serves(dev: SimDevice) -> bool:
    await dev.connect()
    try:
        return isinstance(await dev.authenticate(timeout=5.0), events.Authenticated)
    finally:
        await dev.close()


async def _restart_managing(s: Site, tmp_path: Path, peers: str) -> None:
    """gw-a again, now a daemon that builds its own enforcer from its settings and rewrites the files."""
    await stop_gateway(s, "gw-a")
    enforcement = EnforcementSettings(
        mode="mosquitto",
        password_file=s.broker.directory / "passwords",
        acl_file=s.broker.directory / "acl",
        pid_file=s.broker.pid_path,
        file_group=s.broker.file_group,
        broker_log=s.broker.log_path,
        peer_gateways=peers,
    )
    await start_gateway(s, "gw-a", tmp_path, enforcement=enforcement)


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [True, False], ids=["peer-declared", "peer-not-declared"])
async def test_a_peer_gateway_keeps_its_broker_account_and_serves_with_the_managing_gateway_down(
    tmp_path: Path, declared: bool
) -> None:
    async with site(tmp_path, n_devices=1, gateway_ids=("gw-a", "gw-b")) as s:
        peer_file = tmp_path / "gw-b.broker.password"
        peer_file.write_text(s.secrets["gw-b"] + "\n")
        os.chmod(peer_file, 0o600)
        await _restart_managing(s, tmp_path, f"gw-b={peer_file}" if declared else "")
        acl = (s.broker.directory / "acl").read_text()
        assert ("user gateway-gw-b" in acl) is declared
        assert await _login(s, "gw-a")
        assert await _login(s, "gw-b") is declared  # a peer left out is locked out by the rewrite
        if not declared:
            return
        dev = s.sim(0, gateway_id="gw-b")  # one device, its counters with gw-b kept between attempts
        assert await _serves(dev)
        await stop_gateway(s, "gw-a")  # the managing gateway down: the files stay, the peer serves
        assert await _serves(dev)
