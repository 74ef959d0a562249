# HOTP (RFC 4226) and TOTP (RFC 6238) over any hashlib digest; the protocol uses SHA-256.
from .crypto import hmac_digest


def hotp_value(key, counter, name="sha256", challenge=b""):
    """The 31-bit dynamically truncated value (RFC 4226 section 5.3) for ``counter``; a ``challenge``
    is appended to the counter in the HMAC input, as RFC 6287 (OCRA) does with its question."""
    if counter < 0 or counter >= 1 << 64:
        raise ValueError("HOTP counter out of range")
    h = hmac_digest(key, counter.to_bytes(8, "big") + challenge, name)
    o = h[-1] & 0x0F
    return int.from_bytes(h[o:o + 4], "big") & 0x7FFFFFFF


def hotp(key, counter, digits=6, name="sha1"):
    """The decimal HOTP code, as RFC 4226 Appendix D prints it."""
    if not 6 <= digits <= 10:
        raise ValueError("HOTP digits must be 6..10")
    s = str(hotp_value(key, counter, name) % 10 ** digits)
    return "0" * (digits - len(s)) + s


def totp(key, for_time, step=30, t0=0, digits=8, name="sha256"):
    """RFC 6238: HOTP over the time step that contains ``for_time`` (seconds, a parameter)."""
    if step <= 0:
        raise ValueError("TOTP step must be positive")
    return hotp(key, int(for_time - t0) // step, digits, name)
