"""What the console's modules share about one request: the application's keys, the session, its cookie.

Its own module so that the app (which wires the routes), the API and the pages import it downwards
instead of each other.
"""

from __future__ import annotations

from aiohttp import web

from .service import ConsoleService
from .sessions import COOKIE, Session, SessionStore

__all__ = ["SECURE", "SERVICE", "SESSION", "SESSIONS", "session_of", "set_session_cookie"]

SERVICE: web.AppKey[ConsoleService] = web.AppKey("service", ConsoleService)
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions", SessionStore)
SECURE: web.AppKey[bool] = web.AppKey("secure", bool)
SESSION: web.RequestKey[Session | None] = web.RequestKey("session", object)  # type: ignore[arg-type]


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def set_session_cookie(request: web.Request, response: web.StreamResponse, session: Session | None) -> None:
    if session is None:
        response.del_cookie(COOKIE, path="/")
        return
    response.set_cookie(
        COOKIE,
        session.token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SECURE],
        path="/",
        max_age=int(request.app[SESSIONS].max_age_s),
    )
