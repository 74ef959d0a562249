"""`diams-console`: the web console and REST API of one channel (see app.py)."""

from .app import ConsoleSettings, create_app, main
from .service import ConsoleService
from .sessions import SessionStore

__all__ = ["ConsoleService", "ConsoleSettings", "SessionStore", "create_app", "main"]
