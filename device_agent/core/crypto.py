# HMAC-SHA256 (RFC 2104/4231), HKDF (RFC 5869) and a constant-time compare, stdlib only.
#
# Strategy: CPython's hmac.digest and hmac.compare_digest are used when present (one C call, the
# gateway's hot path); MicroPython has no hmac module, so the same functions are written out over
# hashlib there. Both paths are checked against the same RFC vectors.
import hashlib

_BLOCK = 64


def _pure_hmac(key, msg, name):
    new = getattr(hashlib, name)
    if len(key) > _BLOCK:
        key = new(key).digest()
    # One pad, XORed in place: on MicroPython this allocates about a third of what building each
    # padded key as a new bytes object does, and a device handshake runs HMAC about ten times.
    n = len(key)
    pad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        pad[i] = (key[i] if i < n else 0) ^ 0x36
    inner = new(pad)
    inner.update(msg)
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = new(pad)
    outer.update(inner.digest())
    return outer.digest()


def _pure_equal(a, b):
    # Length is public (all compared values have fixed, known lengths); content is not.
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


try:
    from hmac import compare_digest as ct_equal
    from hmac import digest as _c_hmac

    def hmac_digest(key, msg, name="sha256"):
        return _c_hmac(key, msg, name)

except ImportError:  # MicroPython
    hmac_digest = _pure_hmac  # type: ignore[assignment]
    ct_equal = _pure_equal


def hmac_sha256(key, msg):
    return hmac_digest(key, msg, "sha256")


def sha256(data):
    return hashlib.sha256(data).digest()


def hkdf_extract(salt, ikm):
    return hmac_digest(salt or bytes(32), ikm, "sha256")


def hkdf_expand(prk, info, length=32):
    if length > 255 * 32:
        raise ValueError("HKDF length too large")
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = hmac_digest(prk, block + info + bytes((i,)), "sha256")
        out += block
        i += 1
    return out[:length]


def hkdf(ikm, salt, info, length=32):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
