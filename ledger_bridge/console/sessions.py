"""Signed-in actors: server-side sessions holding each actor's `Signer` in memory only.

Strategy: an actor signs in with their own keystore and passphrase; the console decrypts it once and
keeps the `Signer` (never the passphrase, never the keystore) under a random session token. The browser
holds the token in an HttpOnly, SameSite=Strict cookie (Secure under TLS); every form carries the
session's CSRF token, and a cookie-authenticated API call must echo it in `X-CSRF-Token`. Programs use
`Authorization: Bearer <token>` instead, which a browser never sends by itself, so it needs no CSRF token.
Sessions end after `ttl_s` of inactivity, and at most `max_age_s` after sign-in.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..keystore import Signer

COOKIE = "diams_session"


@dataclass(kw_only=True)
class Session:
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    signer: Signer
    roles: frozenset[str]
    created: float
    last_seen: float

    @property
    def address(self) -> str:
        return self.signer.address

    def may(self, role: str) -> bool:
        return role in self.roles


class SessionStore:
    def __init__(
        self,
        *,
        ttl_s: float = 1800.0,
        max_age_s: float = 12 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_age_s < ttl_s:
            raise ValueError("ttl_s must be positive and max_age_s at least ttl_s")
        self.ttl_s, self.max_age_s = ttl_s, max_age_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def __repr__(self) -> str:
        return f"SessionStore({len(self._sessions)} sessions)"

    def open(self, signer: Signer, roles: frozenset[str]) -> Session:
        now = self._clock()
        session = Session(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            signer=signer,
            roles=roles,
            created=now,
            last_seen=now,
        )
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.ttl_s or now - session.created > self.max_age_s:
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens (absent never matches)."""
    if not a or not b:
        return False
    return secrets.compare_digest(a.encode(), b.encode())
