"""What every handler reaches through ``request.app[STATE]``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from .config import WebserverConfig
from .proxy import ManagerLink
from .sessions import SessionStore
from .static import MemoryFile, StaticFiles


@dataclass
class WebState:
    config: WebserverConfig
    store: SessionStore | None = None
    link: ManagerLink | None = None
    ui: StaticFiles | None = None
    xterm: StaticFiles | None = None
    #: /vendor/xterm/bundle.js, built on first request.
    xterm_bundle: MemoryFile | None = None
    #: Logins being checked by the manager at once (each costs it a password hash).
    logins: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    #: Security headers added to every answer (computed once from the config).
    headers: dict[str, str] = field(default_factory=dict)


STATE = web.AppKey("state", WebState)
#: Who made the request (the access log names them).
USER = web.RequestKey("bai_user", str)
