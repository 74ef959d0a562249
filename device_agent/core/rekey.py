# Re-keying at transfer: the new owner and the device agree on a fresh device secret S' that nobody
# else can compute, a previous owner that knows S, saw every message and is active on the path included.
#
# Strategy: the device holds a static X25519 key pair made on the device at manufacture (the private
# half never leaves it; the public half DS is registered on the ledger by its manufacturer). The new
# owner, after acceptTransfer, sends an ephemeral key O; the device answers with an ephemeral key ED:
#
#   INIT    owner -> device  0x21 | u32 e | O(32) | No(16) | HMAC(K_init, those bytes)[:8]      61 bytes
#   REPLY   device -> owner  0x22 | ED(32) | Nd(16) | HMAC(K_conf, 0x22 | T)[:16]               65 bytes
#   CONFIRM owner -> device  0x23 | HMAC(K_conf, 0x23 | T)[:16]                                 17 bytes
#   DONE    device -> owner  0x24 | HMAC(K_done, 0x24 | T)[:16], only once S' is durably stored  17 bytes
#
#   T      = "diams/v1/rekey" | D | u32 e | DS | O | ED | No | Nd
#   S'     = HKDF(ikm = X25519(ds, O) | X25519(ed, O), salt = D, info = "diams/v1/rekey-secret" | T)
#   K_conf = HKDF-Expand(S', "diams/v1/rekey-confirm", 32)
#   K_done = HKDF-Expand(S', "diams/v1/rekey-done", 32)
#   K_init = HKDF(ikm = S, salt = D, info = "diams/v1/rekey-init" | u32 e)
#
# S is not an input of S': knowing S (and the transcript) gives nothing. The first DH term needs the
# device's static private key, so only the real device can produce REPLY's tag: an owner that checks it
# against DS from the ledger detects any substituted ED or O (key confirmation). CONFIRM proves to the
# device that the other end holds o; the device commits S' only then, so it never switches to a key
# nobody confirmed. K_init only keeps strangers (who lack S) from starting a re-key; a previous owner
# knows S and can start one, so it can *deny* the transfer (visible: the new owner never confirms), never
# learn the new owner's S'. After the device commits S', INIT needs S': the previous owner is out.
# DONE proves to the owner that the device has *stored* S' (it is computed only after the commit, under
# a key of its own from S', bound to T): the owner records confirmRekey, which ends the re-key window,
# only after it verifies, so a device that died before its commit still holds a secret the owner's retry
# can reach. Nobody without S' can make it, and T (fresh nonces) makes one run's DONE worthless in another.
#
# Loaded only when re-keying: not part of the handshake core's budget. ``x25519`` is a parameter
# (CPython: device_agent/agent/x25519.py over `cryptography`; MicroPython: x25519.py here, pure
# Python); randomness is an argument, as in the whole core, which stays stdlib-only.
from .crypto import ct_equal, hkdf, hkdf_expand, hmac_sha256

INIT, REPLY, CONFIRM, DONE = 0x21, 0x22, 0x23, 0x24
INIT_LEN, REPLY_LEN, CONFIRM_LEN, DONE_LEN = 61, 65, 17, 17
_TAG_INIT, _TAG = 8, 16


class RekeyError(Exception):
    """The exchange failed; ``reason`` names why (never quotes a key)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _u32(n):
    return n.to_bytes(4, "big")


def _init_key(secret, device_id, epoch):
    return hkdf(secret, device_id, b"diams/v1/rekey-init" + _u32(epoch))


def _transcript(device_id, epoch, ds, o, ed, no, nd):
    return b"diams/v1/rekey" + device_id + _u32(epoch) + ds + o + ed + no + nd


def _derive(dh1, dh2, device_id, t):
    s2 = hkdf(dh1 + dh2, device_id, b"diams/v1/rekey-secret" + t)
    return s2, hkdf_expand(s2, b"diams/v1/rekey-confirm", 32)


def _done_tag(s2, t):
    return hmac_sha256(hkdf_expand(s2, b"diams/v1/rekey-done", 32), bytes((DONE,)) + t)[:_TAG]


def key_commitment(new_secret):
    """What the owner records on the ledger (confirmRekey): reveals nothing of a 256-bit S'."""
    return hmac_sha256(new_secret, b"diams/v1/rekey-commitment")


def _good_point(dh):
    # an all-zero shared secret means a low-order point was sent: refuse (RFC 7748 section 6.1)
    acc = 0
    for b in dh:
        acc |= b
    return acc != 0


class OwnerRekey:
    """The new owner's side. ``start()`` -> INIT; ``reply(msg)`` -> CONFIRM and ``new_secret``;
    ``done(msg)`` checks the device's DONE: only then may ``confirmRekey`` be recorded."""

    def __init__(self, device_id, epoch, secret, device_public, x25519, random):
        self.device_id, self.epoch = device_id, epoch
        self._secret, self._ds = secret, device_public
        self._x, self._random = x25519, random
        self._o = None
        self._t = None
        self.new_secret = None

    def __repr__(self):
        return "OwnerRekey(%s, epoch=%d)" % (self.device_id.hex(), self.epoch)

    def start(self):
        self._o = self._random(32)
        self._O = self._x(self._o, b"\x09" + bytes(31))
        self._no = self._random(16)
        body = bytes((INIT,)) + _u32(self.epoch) + self._O + self._no
        return body + hmac_sha256(_init_key(self._secret, self.device_id, self.epoch), body)[:_TAG_INIT]

    def reply(self, msg):
        if self._o is None:
            raise RekeyError("not_started")
        if len(msg) != REPLY_LEN or msg[0] != REPLY:
            raise RekeyError("bad_message")
        ed, nd, tag = msg[1:33], msg[33:49], msg[49:]
        dh1, dh2 = self._x(self._o, self._ds), self._x(self._o, ed)
        if not (_good_point(dh1) and _good_point(dh2)):
            raise RekeyError("bad_key")
        t = _transcript(self.device_id, self.epoch, self._ds, self._O, ed, self._no, nd)
        s2, k_conf = _derive(dh1, dh2, self.device_id, t)
        if not ct_equal(hmac_sha256(k_conf, bytes((REPLY,)) + t)[:_TAG], tag):
            # not the device that holds DS's private key (or a substituted key): key confirmation fails
            raise RekeyError("device_confirmation")
        self._o = None
        self._t = t
        self.new_secret = s2
        return bytes((CONFIRM,)) + hmac_sha256(k_conf, bytes((CONFIRM,)) + t)[:_TAG]

    def done(self, msg):
        """Raises RekeyError unless ``msg`` is this exchange's DONE: the device has stored S'."""
        if self._t is None:
            raise RekeyError("not_started")
        if len(msg) != DONE_LEN or msg[0] != DONE:
            raise RekeyError("bad_message")
        if not ct_equal(_done_tag(self.new_secret, self._t), msg[1:]):
            raise RekeyError("bad_done")  # not under this exchange's S': from S, or another run's


class DeviceRekey:
    """The device's side. ``init(msg)`` -> REPLY; ``confirm(msg)`` -> S' to commit (durably, replacing S);
    ``done()`` -> DONE, to send only once that commit is durable."""

    def __init__(self, device_id, secret, static_private, x25519, random):
        self.device_id = device_id
        self._secret, self._ds_priv = secret, static_private
        self._x, self._random = x25519, random
        self._pending = None
        self._done = None

    def __repr__(self):
        return "DeviceRekey(%s)" % self.device_id.hex()

    def init(self, msg):
        if len(msg) != INIT_LEN or msg[0] != INIT:
            raise RekeyError("bad_message")
        epoch = int.from_bytes(msg[1:5], "big")
        o, no, tag = msg[5:37], msg[37:53], msg[53:]
        expected = hmac_sha256(_init_key(self._secret, self.device_id, epoch), msg[:53])[:_TAG_INIT]
        if not ct_equal(expected, tag):
            raise RekeyError("bad_init")  # not from a holder of the current secret
        base = b"\x09" + bytes(31)
        ed_priv = self._random(32)
        ed = self._x(ed_priv, base)
        nd = self._random(16)
        dh1, dh2 = self._x(self._ds_priv, o), self._x(ed_priv, o)
        if not (_good_point(dh1) and _good_point(dh2)):
            raise RekeyError("bad_key")
        ds = self._x(self._ds_priv, base)
        t = _transcript(self.device_id, epoch, ds, o, ed, no, nd)
        s2, k_conf = _derive(dh1, dh2, self.device_id, t)
        self._pending = (s2, k_conf, t)
        return bytes((REPLY,)) + ed + nd + hmac_sha256(k_conf, bytes((REPLY,)) + t)[:_TAG]

    def confirm(self, msg):
        if self._pending is None:
            raise RekeyError("not_started")
        s2, k_conf, t = self._pending
        if len(msg) != CONFIRM_LEN or msg[0] != CONFIRM:
            raise RekeyError("bad_message")
        if not ct_equal(hmac_sha256(k_conf, bytes((CONFIRM,)) + t)[:_TAG], msg[1:]):
            self._pending = None
            raise RekeyError("owner_confirmation")
        self._pending = None
        self._secret = s2
        self._done = bytes((DONE,)) + _done_tag(s2, t)
        return s2

    def done(self):
        """DONE for the confirmed exchange. Call it only after S' is durably stored: it tells the owner
        that it may record confirmRekey, which ends the re-key window."""
        if self._done is None:
            raise RekeyError("not_started")
        return self._done
