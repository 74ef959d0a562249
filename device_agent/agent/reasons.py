"""What a gateway's REJECT reason means to the person reading the agent's log (PROTOCOL.md section 4).

A REJECT is unauthenticated (anyone on the broker could forge one), so the agent never acts on these
words beyond logging them; they are the likely causes an operator should check first.
"""

from __future__ import annotations

__all__ = ["explain"]

_MEANING = {
    "bad_otp": "the gateway's key for this device does not match this device's key",
    "bad_proof": "the proof did not verify: a key mismatch, or a message altered on the way",
    "stale_epoch": "the device tried an old identity epoch",
    "counter_window": "the OTP counter is past the gateway's look-ahead window: the owner must re-key",
    "unknown_device": "this gateway does not serve the device (not authorized, suspended or revoked)",
    "locked_out": "too many failed handshakes: the gateway waits before it answers again",
    "rate_limited": "too many handshake messages: slow down",
    "timeout": "no answer from the gateway in time",
    "clone": "the gateway saw a counter used twice: a clone of this device may exist",
}

# After an epoch hint, a key mismatch is most often a firmware update: the ledger records a new hash
# and the owner re-seals every gateway's key for it; a device still on the old image derives the old key.
_AFTER_HINT = ("under the epoch the gateway hinted: this image's firmware hash is likely not the one "
               "recorded on the ledger (a firmware update this device has not installed?), or the owner "
               "has not re-sealed the keys for it yet")


def explain(reason: str, *, after_epoch_hint: bool = False) -> str:
    """A short sentence for ``reason`` (any string: unknown reasons are named as they are)."""
    text = _MEANING.get(reason, "reason not known to this agent")
    if after_epoch_hint and reason in ("bad_otp", "bad_proof"):
        text += " " + _AFTER_HINT
    return text
