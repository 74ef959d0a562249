# The device role: sans-IO. The adapter gives it the counter and nonce to use (the counter must
# already be durable on the device: write it before sending HELLO), feeds it every message
# received on the device's handshake-down topic, and sends back whatever it returns.
from . import states, wire
from .crypto import ct_equal, hmac_sha256
from .errors import LocalProtocolError, RemoteProtocolError, reason_name
from .events import Authenticated, Ignored, Rejected
from .keys import pair_keys, proof_tag, session_keys, transcript
from .otp import hotp_value
from .session import Session


class DeviceRole:
    """One device's side of the handshake with one gateway.

    ``gateway_key`` is K_dg for (this device, ``gateway_id``, ``epoch``, firmware), from
    ``keys.gateway_key``. Keys never appear in reprs.
    """

    def __init__(self, device_id, gateway_id, gateway_key, epoch):
        if len(device_id) != 8 or not gateway_id:
            raise LocalProtocolError("bad device or gateway id")
        self.device_id = device_id
        self.gateway_id = gateway_id
        self.epoch = epoch
        self._k_otp, self._k_mac = pair_keys(gateway_key)
        self.state = states.IDLE
        self._t = None
        self.session = None  # the session of the last completed handshake, until a new one completes

    def __repr__(self):
        return "DeviceRole(%s via %s, %s)" % (self.device_id.hex(), self.gateway_id.decode(), self.state)

    def _go(self, event):
        nxt = states.advance(states.DEVICE, self.state, event)
        if nxt is None:
            raise LocalProtocolError("no transition %s --%s-->" % (self.state, event))
        self.state = nxt

    def hello(self, counter, nonce):
        """Start a handshake; -> HELLO bytes. ``nonce``: 8 bytes from a CSPRNG."""
        if len(nonce) != wire.NONCE_LEN or not 0 <= counter <= 0xFFFFFFFF:
            raise LocalProtocolError("nonce must be 8 bytes and counter a u32")
        self._go("hello")
        self._counter = counter
        self._nonce = nonce
        otp = hotp_value(self._k_otp, counter, "sha256", nonce).to_bytes(4, "big")
        return wire.encode(wire.HELLO, self.epoch, counter, nonce, otp)

    def timeout(self):
        """The adapter's timer ran out while waiting for the gateway."""
        return self._fail("timeout")

    def _fail(self, reason, epoch=0):
        if states.advance(states.DEVICE, self.state, "fail") is None:
            return Ignored("unexpected")
        self._go("fail")
        return Rejected(self.device_id, reason, None, epoch)

    def receive(self, payload, now):
        """Feed one received message -> (reply bytes or None, event)."""
        try:
            mtype = wire.message_type(payload)
            if mtype == wire.REJECT:
                code, epoch = wire.decode(payload, wire.REJECT)
                return None, self._fail(reason_name(code), epoch)
            if mtype == wire.CHALLENGE and self.state == states.HELLO_SENT:
                return self._on_challenge(payload)
            if mtype == wire.RESULT and self.state == states.PROOF_SENT:
                return None, self._on_result(payload, now)
            return None, Ignored("unexpected")
        except RemoteProtocolError as exc:
            return None, Ignored(exc.reason)

    def _on_challenge(self, payload):
        g_nonce, tag = wire.decode(payload, wire.CHALLENGE)
        t = transcript(self.device_id, self.gateway_id, self.epoch, self._counter, self._nonce, g_nonce)
        if not ct_equal(proof_tag(self._k_mac, wire.CHALLENGE, t), tag):
            return None, self._fail("bad_gateway_proof")
        self._go("challenge")
        self._t = t
        return wire.encode(wire.PROOF, proof_tag(self._k_mac, wire.PROOF, t)), Ignored("challenge_ok")

    def _on_result(self, payload, now):
        status, lifetime, tag = wire.decode(payload, wire.RESULT)
        k_up, k_down = session_keys(self._k_mac, self._t)
        body = wire.result_body(status, lifetime)
        if not ct_equal(hmac_sha256(k_down, body + self._t)[:wire.TAG_LEN], tag):
            return self._fail("bad_result")
        if status != 0:
            return self._fail(reason_name(status))
        self._go("granted")
        self.session = Session(self.device_id, self.gateway_id, k_up, k_down, wire.DATA, wire.COMMAND,
                               now + lifetime)
        return Authenticated(self.session)
