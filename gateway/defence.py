"""Flood and guessing defences in front of the gateway role: rate limits and lockouts.

Strategy: every check here is a dict look-up and a few float operations, done before the protocol
core spends an HMAC. Handshake messages pass ``Defence`` (per device and global buckets, lockouts);
data messages of an authenticated device pass ``DataLimiter`` (a per-device bucket) before their MAC
is checked, and a device that keeps sending far past its rate loses its session (it must handshake
again, at the handshake rate), so one device cannot make the gateway spend its time on its data.
Data without a session never reach either: a dict miss drops them. What a device sends before it
authenticates and is refused (handshakes past its rate, data without a session) is bounded too:
``PreAuthBan`` has the broker cut off a device that keeps it up, for a while.
Per-device state is bounded (least recently seen devices are forgotten first),
so a flood of messages for random device ids costs bounded memory. A device that fails handshakes
``lockout_after`` times in a row is locked out for ``lockout_base * 2**k`` seconds (capped); a success
resets it. The clock is an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= n:
            self.tokens = tokens - n
            return True
        self.tokens = tokens
        return False


class _DeviceState:
    __slots__ = ("bucket", "failures", "locked_until")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.failures = 0
        self.locked_until = 0.0


@dataclass(frozen=True, kw_only=True)
class Verdict:
    allowed: bool
    reason: str = ""  # "rate_limited" | "locked_out" | "global_rate"


ALLOW = Verdict(allowed=True)
_DEVICE_RATE = Verdict(allowed=False, reason="rate_limited")
_LOCKED = Verdict(allowed=False, reason="locked_out")
_GLOBAL = Verdict(allowed=False, reason="global_rate")


class Defence:
    def __init__(
        self,
        *,
        device_rate: float,
        device_burst: int,
        global_rate: float,
        global_burst: int,
        lockout_after: int,
        lockout_base: float,
        lockout_max: float,
        max_tracked: int,
        now: float,
    ) -> None:
        self._device_rate = device_rate
        self._device_burst = device_burst
        self._global = TokenBucket(global_rate, global_burst, now)
        self.lockout_after = lockout_after
        self.lockout_base = lockout_base
        self.lockout_max = lockout_max
        self.max_tracked = max_tracked
        self._devices: OrderedDict[bytes, _DeviceState] = OrderedDict()

    def __repr__(self) -> str:
        return f"Defence(tracked={len(self._devices)})"

    @property
    def tracked(self) -> int:
        return len(self._devices)

    def _state(self, device_id: bytes, now: float) -> _DeviceState:
        st = self._devices.get(device_id)
        if st is None:
            st = _DeviceState(TokenBucket(self._device_rate, self._device_burst, now))
            self._devices[device_id] = st
            if len(self._devices) > self.max_tracked:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(device_id)
        return st

    def admit(self, device_id: bytes, now: float) -> Verdict:
        """May this device's handshake message be processed now?"""
        st = self._state(device_id, now)
        if now < st.locked_until:
            return _LOCKED
        if not st.bucket.take(now):
            return _DEVICE_RATE
        if not self._global.take(now):
            return _GLOBAL
        return ALLOW

    def failed(self, device_id: bytes, now: float) -> float:
        """Record a failed handshake; -> the lockout now in force (0 when none)."""
        st = self._state(device_id, now)
        st.failures += 1
        extra = st.failures - self.lockout_after
        if extra < 0:
            return 0.0
        lock = min(self.lockout_max, self.lockout_base * 2.0 ** min(extra, 30))
        st.locked_until = now + lock
        return lock

    def succeeded(self, device_id: bytes) -> None:
        st = self._devices.get(device_id)
        if st is not None:
            st.failures = 0
            st.locked_until = 0.0


class DataLimiter:
    """Per-device token bucket for DATA, checked before the MAC. ``admit`` -> "" (go on),
    "rate_limited" (drop this one) or "flooding" (drop, and end the session: ``flood_after``
    messages refused since the session began)."""

    def __init__(self, *, rate: float, burst: int, flood_after: int, max_tracked: int, now: float) -> None:
        if rate <= 0 or burst < 1 or flood_after < 1 or max_tracked < 1:
            raise ValueError("DataLimiter needs rate > 0, burst >= 1, flood_after >= 1, max_tracked >= 1")
        self.rate = rate
        self.burst = burst
        self.flood_after = flood_after
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._refused: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return f"DataLimiter(rate={self.rate}, burst={self.burst}, tracked={len(self._buckets)})"

    def admit(self, device_id: bytes, now: float) -> str:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_tracked:
                old, _ = self._buckets.popitem(last=False)
                self._refused.pop(old, None)
        if bucket.take(now):
            return ""
        refused = self._refused.get(device_id, 0) + 1
        self._refused[device_id] = refused
        return "flooding" if refused >= self.flood_after else "rate_limited"

    def reset(self, device_id: bytes) -> None:
        """A new session: a full bucket and a clean record."""
        self._buckets.pop(device_id, None)
        self._refused.pop(device_id, None)


class PreAuthBan:
    """Bounds what one device costs the gateway *before* it authenticates, where no session key can
    tell its messages apart: handshake messages past its rate (``Defence``) and DATA without a session
    are dropped at the price of a dict look-up, but a device publishing as fast as the broker lets it
    (tens of thousands of messages a second) would still fill the gateway's one MQTT connection and
    delay everyone's handshakes. Each refused pre-authentication message takes a token from the
    device's bucket (``rate`` per second, ``burst``); a device that empties it is *banned*: the gateway
    cuts it off at the broker (its connection is closed, a reconnect refused) for ``ban_seconds``, then
    enrols it again (the gateway keeps each ban's end in its state, so a restart does not end it).
    Honest devices never come near it: they retry at the handshake rate, and after a
    gateway restart send data at their own pace until told (once a second) to re-authenticate.
    ``refused`` -> True exactly once per ban; bounded state, like ``Defence``."""

    def __init__(self, *, rate: float, burst: int, ban_seconds: float, max_tracked: int, now: float) -> None:
        if rate <= 0 or burst < 1 or ban_seconds <= 0 or max_tracked < 1:
            raise ValueError("PreAuthBan needs rate > 0, burst >= 1, ban_seconds > 0, max_tracked >= 1")
        self.rate = rate
        self.burst = burst
        self.ban_seconds = ban_seconds
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._banned_until: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return f"PreAuthBan(rate={self.rate}, burst={self.burst}, banned={len(self._banned_until)})"

    def refused(self, device_id: bytes, now: float) -> bool:
        """One pre-authentication message of this device was refused -> True: ban it now."""
        if self.banned(device_id, now):
            return False
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        if bucket.take(now):
            return False
        del self._buckets[device_id]
        self._banned_until[device_id] = now + self.ban_seconds
        return True

    def ban(self, device_id: bytes, now: float, seconds: float | None = None) -> bool:
        """Ban this device now, whatever its allowance (it flooded data in a session), for ``seconds``
        (``ban_seconds`` unless told: what is left of a ban recorded before a restart) -> True when it
        was not banned already."""
        if self.banned(device_id, now):
            return False
        self._buckets.pop(device_id, None)
        self._banned_until[device_id] = now + (self.ban_seconds if seconds is None else seconds)
        return True

    def banned(self, device_id: bytes, now: float) -> bool:
        until = self._banned_until.get(device_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._banned_until[device_id]
        return False
