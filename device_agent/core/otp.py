# HOTP (RFC 4226) over any hashlib digest; the protocol uses SHA-256. The decimal codes of RFC 4226
# and TOTP (RFC 6238) are what the tests compute from hotp_value against the RFCs' vectors
# (tests/core/vectors.py, firmware_sim/mpy/scripts/check_vectors.py): no device needs them, so they
# cost no board heap.
from .crypto import hmac_digest


def hotp_value(key, counter, name="sha256", challenge=b""):
    """The 31-bit dynamically truncated value (RFC 4226 section 5.3) for ``counter``; a ``challenge``
    is appended to the counter in the HMAC input, as RFC 6287 (OCRA) does with its question."""
    if counter < 0 or counter >= 1 << 64:
        raise ValueError("HOTP counter out of range")
    h = hmac_digest(key, counter.to_bytes(8, "big") + challenge, name)
    o = h[-1] & 0x0F
    return int.from_bytes(h[o:o + 4], "big") & 0x7FFFFFFF

