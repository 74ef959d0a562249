"""Loads the vector files shared by the CPython and MicroPython runs."""

import json
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict:
    return json.loads((DIR / name).read_text())


def hotp(key: bytes, counter: int, digits: int = 6, name: str = "sha1") -> str:
    """The decimal HOTP code, as RFC 4226 Appendix D prints it, from the core's truncated value (no
    device needs the decimal form, so the core does not carry it)."""
    from device_agent.core.otp import hotp_value

    if not 6 <= digits <= 10:
        raise ValueError("HOTP digits must be 6..10")
    return str(hotp_value(key, counter, name) % 10**digits).rjust(digits, "0")


def totp(key: bytes, for_time: float, step: int = 30, t0: int = 0, digits: int = 8,
         name: str = "sha256") -> str:
    """RFC 6238: HOTP over the time step that contains ``for_time``."""
    if step <= 0:
        raise ValueError("TOTP step must be positive")
    return hotp(key, int(for_time - t0) // step, digits, name)
