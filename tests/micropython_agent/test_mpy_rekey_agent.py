"""The MicroPython agent re-keys at transfer (device_agent/micropython/rekey.py under the real unix
port, pure X25519): the new owner's exchange replaces S by S' in the key file; the previous owner's
INIT (keyed by S) is refused afterwards; a substituted CONFIRM leaves S unchanged; the device proves
its commit with DONE, over its console and over MQTT."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from device_agent.agent.x25519 import x25519
from device_agent.core import rekey
from firmware_sim.mpy import runner
from tests.conftest import require

SCRIPT = runner.SCRIPTS / "run_rekey.py"
X = x25519


def _start(*args: str) -> subprocess.Popen[str]:
    require(runner.MICROPYTHON is not None, "micropython")
    env = {**os.environ, "MICROPYPATH": f"{runner.REPO}:.frozen"}
    return subprocess.Popen([str(runner.MICROPYTHON), "-X", "heapsize=64K", str(SCRIPT), *args], env=env,
                            cwd=runner.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _device(tmp_path: Path) -> tuple[bytes, bytes, Path, Path, bytes]:
    did, secret = os.urandom(8), os.urandom(32)
    key, static = tmp_path / "secret.key", tmp_path / "secret.key.x25519"
    key.write_text(secret.hex() + "\n")
    proc = _start("device-key", str(static))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    public = bytes.fromhex(out.strip())
    assert X(bytes.fromhex(static.read_text().strip()), b"\x09" + bytes(31)) == public
    return did, secret, key, static, public


def _exchange(did, secret, public, key, static, *, confirm_override=None):
    owner = rekey.OwnerRekey(did, 4, secret, public, X, os.urandom)
    proc = _start(did.hex(), str(key), str(static))
    assert proc.stdin and proc.stdout
    proc.stdin.write(owner.start().hex() + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline().strip()
    if line.startswith("refused"):
        proc.communicate(timeout=60)
        return owner, line, proc.returncode
    confirm = owner.reply(bytes.fromhex(line))
    proc.stdin.write((confirm_override or confirm).hex() + "\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    return owner, out.strip() or err.strip(), proc.returncode


def test_micropython_agent_rekeys_and_the_previous_owner_is_out(tmp_path):
    did, secret, key, static, public = _device(tmp_path)
    owner, out, code = _exchange(did, secret, public, key, static)
    done, last = out.splitlines()
    assert code == 0 and last == "committed"
    owner.done(bytes.fromhex(done))  # the proof of the commit, made after it: it verifies
    s2 = bytes.fromhex(key.read_text().strip())
    assert s2 == owner.new_secret != secret
    # the previous owner, who knows only S, is refused from now on; S' stays
    _, out, code = _exchange(did, secret, public, key, static)
    assert code == 1 and out == "refused bad_init"
    assert bytes.fromhex(key.read_text().strip()) == s2


def test_a_forged_confirm_leaves_the_secret_unchanged(tmp_path):
    did, secret, key, static, public = _device(tmp_path)
    _, out, code = _exchange(did, secret, public, key, static, confirm_override=b"\x23" + os.urandom(16))
    assert code == 1 and out == "refused owner_confirmation"
    assert bytes.fromhex(key.read_text().strip()) == secret


@pytest.mark.micropython
@pytest.mark.broker
def test_the_micropython_agent_rekeys_over_mqtt(broker, tmp_path: Path) -> None:
    """The running MicroPython agent answers the new owner's tool on its re-key topics (the same
    MqttRekeyChannel that `diams-ledger rekey` uses): S' replaces S in its key file, then its DONE proves
    it, and its next broker login uses P from S'; an INIT from a stranger is refused first and changes
    nothing."""
    import asyncio
    import json

    from device_agent.core import keys
    from firmware_sim.mpy import agent as mpyagent
    from ledger_bridge.rekey import MqttRekeyChannel, RekeyTimeout

    require(mpyagent.umqtt_available(), "umqtt.simple in .vendor/micropython")
    did, secret, key, static, public = _device(tmp_path)
    env = {**os.environ, "MICROPYPATH": f"{runner.REPO}:{mpyagent.VENDOR}:.frozen"}
    # from sources, compiled at import: more heap than a board's frozen agent needs (test_packaging.py)
    proc = subprocess.Popen(
        [str(runner.MICROPYTHON), "-X", "heapsize=128K", str(runner.SCRIPTS / "rekey_mqtt.py"), broker.host,
         str(broker.port), did.hex(), str(key), str(static), (b"\x01" * 32).hex(), "gw-a",
         str(tmp_path / "state"), "60"],
        env=env, cwd=runner.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and json.loads(proc.stdout.readline()) == {"ready": True}

        async def owner(with_secret: bytes) -> bytes | None:
            role = rekey.OwnerRekey(did, 3, with_secret, public, X, os.urandom)
            with MqttRekeyChannel(host=broker.host, port=broker.port, gateway_id="gw-a", device_id=did,
                                  username="gateway-gw-a", password="x" * 16, timeout=5.0) as ch:
                try:
                    confirm = role.reply(await ch.request(role.start()))
                except RekeyTimeout:  # the stranger's INIT gets no REPLY
                    return None
                role.done(await ch.request(confirm))  # DONE verifies ...
                assert bytes.fromhex(key.read_text().strip()) == role.new_secret  # ... S' already stored
            return role.new_secret

        assert asyncio.run(owner(os.urandom(32))) is None  # not keyed by S: no answer
        new_secret = asyncio.run(owner(secret))
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"rekeyed": 1, "refused": ["rekey_refused_bad_init"], "login_epoch": 0,
                      "password": keys.broker_password(new_secret, did, 0)}
    assert new_secret is not None and bytes.fromhex(key.read_text().strip()) == new_secret != secret
