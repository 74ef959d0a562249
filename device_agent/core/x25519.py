# X25519 (RFC 7748 section 5) in pure Python, for boards without a C implementation.
#
# Strategy: the Montgomery ladder over the field 2^255 - 19 with Python integers, as the RFC's
# pseudocode describes it; the conditional swap is arithmetic on the secret bit, not a branch.
# Python big integers are not constant-time, so this is for the re-keying exchange only (once per
# transfer, the device's own key), never a hot path. CPython callers use `cryptography` instead
# (rekey.py picks); both are checked against the RFC 7748 vectors (tests/vectors/x25519.json).
_P = 2**255 - 19
_A24 = 121665


def _scalar(k):
    b = bytearray(k)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(bytes(b), "little")


def _u(u):
    b = bytearray(u)
    b[31] &= 127  # the RFC masks the top bit of u
    return int.from_bytes(bytes(b), "little") % _P


def x25519(k, u):
    """X25519(k, u): 32-byte scalar k, 32-byte u-coordinate u -> 32 bytes."""
    if len(k) != 32 or len(u) != 32:
        raise ValueError("x25519 takes 32-byte inputs")
    n = _scalar(k)
    x1 = _u(u)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    p = _P
    for t in range(254, -1, -1):
        bit = (n >> t) & 1
        swap ^= bit
        mask = -swap  # 0 or -1: swap without a branch on the secret bit
        d = mask & (x2 ^ x3)
        x2 ^= d
        x3 ^= d
        d = mask & (z2 ^ z3)
        z2 ^= d
        z3 ^= d
        swap = bit
        a = x2 + z2
        aa = a * a % p
        b = x2 - z2
        bb = b * b % p
        e = aa - bb
        c = x3 + z3
        dd = x3 - z3
        da = dd * a % p
        cb = c * b % p
        x3 = (da + cb) * (da + cb) % p
        z3 = x1 * ((da - cb) * (da - cb) % p) % p
        x2 = aa * bb % p
        z2 = e * ((aa + _A24 * e) % p) % p
    mask = -swap
    d = mask & (x2 ^ x3)
    x2 ^= d
    d = mask & (z2 ^ z3)
    z2 ^= d
    return (x2 * pow(z2, p - 2, p) % p).to_bytes(32, "little")


BASE = b"\x09" + bytes(31)


def public_key(private):
    return x25519(private, BASE)
