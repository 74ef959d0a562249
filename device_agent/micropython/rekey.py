# mypy: ignore-errors
# (MicroPython code: checked by mpy-cross and run under the real unix port in tests/micropython_agent/.)
#
# Re-keying at transfer on the MicroPython agent (docs/PROTOCOL.md 2.3): the device's side of
# device_agent.core.rekey with the pure-Python X25519, over MQTT (Responder: agent.py feeds it what
# arrives on the device's re-key down topics, given rekey_files) or any line channel (run(): the console
# or a serial line the new owner's tool talks to: hex lines, INIT in, REPLY out, CONFIRM in, DONE out).
#
# Loaded only when re-keying (agent.py imports it when the first re-key message arrives): it is not
# part of the handshake's flash or heap budget (bench/bench_rekey.py measures it). The static private
# key is a hex file made once at manufacture (make_device_key); S is replaced by S' (temp file +
# rename) only after the owner's CONFIRM verifies, so a failed or interrupted exchange leaves S as it
# was; DONE, the proof of that commit the owner waits for before it records confirmRekey, is made only
# after the rename.
import os
import time

from device_agent.core import rekey
from device_agent.core.x25519 import public_key, x25519


def _read_hex(path):
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def _write_hex(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data.hex() + "\n")
    os.rename(tmp, path)


def make_device_key(static_path, random=os.urandom):
    """The device's static X25519 public key; the private key is made (once) if the file is absent."""
    try:
        private = _read_hex(static_path)
    except OSError:
        private = random(32)
        _write_hex(static_path, private)
    return public_key(private)


def run(device_id, key_path, static_path, read_line, write_line, random=os.urandom):
    """One exchange; on success S' replaces S in key_path, then DONE is written -> True. Raises
    rekey.RekeyError."""
    role = rekey.DeviceRekey(device_id, _read_hex(key_path), _read_hex(static_path), x25519, random)
    write_line(role.init(bytes.fromhex(read_line().strip())).hex())
    _write_hex(key_path, role.confirm(bytes.fromhex(read_line().strip())))
    write_line(role.done().hex())
    return True


class Responder:
    """One re-key at a time, message by message: ``message(secret, payload) -> (answer, S')``.

    An INIT gets a REPLY (a duplicate of the pending INIT, as QoS 1 may deliver, the same REPLY); the
    CONFIRM that verifies replaces S by S' in key_path, then gets DONE (a repeat of that CONFIRM, the
    same DONE). Raises rekey.RekeyError (nothing changed) or OSError (no static key file)."""

    def __init__(self, device_id, key_path, static_path, random=os.urandom):
        self.device_id = device_id
        self.key_path = key_path
        self.static_path = static_path
        self._random = random
        self._role = None
        self._init = None  # (INIT, our REPLY): public bytes, so a plain compare is fine
        self._done = None  # (CONFIRM, our DONE) of the last commit

    def message(self, secret, payload):
        kind = payload[0] if payload else -1
        if kind == rekey.INIT:
            if self._init is not None and payload == self._init[0]:
                return self._init[1], None
            role = rekey.DeviceRekey(self.device_id, secret, _read_hex(self.static_path), x25519,
                                     self._random)
            reply = role.init(payload)
            self._role = role
            self._init = (bytes(payload), reply)
            return reply, None
        if kind == rekey.CONFIRM:
            if self._done is not None and payload == self._done[0]:
                return self._done[1], None  # committed already: DONE again (the first may be lost)
            role = self._role
            self._role = None
            self._init = None
            if role is None:
                raise rekey.RekeyError("not_started")
            new_secret = role.confirm(payload)
            _write_hex(self.key_path, new_secret)
            done = role.done()  # only after the rename: S' is stored
            self._done = (bytes(payload), done)
            return done, new_secret
        raise rekey.RekeyError("bad_message")


def on_message(agent, gateway, payload):
    """What agent.py hands over from its re-key down topic of ``gateway`` (given ``rekey_files``): the
    exchange runs in a Responder kept on the agent; its answers (REPLY, then DONE once S' is stored)
    go out on the re-key up topic; after the commit the agent logs in, and authenticates, with S' (the
    new owner authorizes gateways next)."""
    from device_agent.core import topics

    if agent._rekeyer is None:
        agent._rekeyer = Responder(agent.device_id, agent._rekey_files[0], agent._rekey_files[1])
    stats = agent.stats
    try:
        reply, new_secret = agent._rekeyer.message(agent._secret, payload)
    except (rekey.RekeyError, OSError) as exc:
        reason = getattr(exc, "reason", "no_device_key")
        key = "rekey_refused_" + reason
        stats[key] = stats.get(key, 0) + 1
        print("diams: re-key via", gateway, "refused:", reason)
        return
    if reply is not None:
        agent.client.publish(topics.rekey_up(gateway, agent.dhex), reply)
    if new_secret is not None:
        agent._secret = new_secret  # the next logins' P_e derive from S' (agent.connect)
        stats["rekeyed"] = stats.get("rekeyed", 0) + 1
        print("diams: re-keyed via", gateway, "- the new owner authorizes gateways next")
        agent._do(agent.policy.reauth(time.time()))
