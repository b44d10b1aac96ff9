"""Typed keys for what the app and requests carry."""

from __future__ import annotations

from aiohttp import web

from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import Scheduler
from bai.manager.services.sessions import SessionService
from bai.manager.store.keypairs import Requester

CTX = web.AppKey("ctx", ManagerContext)
SESSIONS = web.AppKey("sessions", SessionService)
SCHEDULER = web.AppKey("scheduler", Scheduler)
REQUESTER = web.RequestKey("requester", Requester)
API_VERSION = web.RequestKey("api_version", tuple[int, str])
RATELIMIT = web.RequestKey("ratelimit", tuple[int, int])


def requester(request: web.Request) -> Requester:
    value: Requester = request[REQUESTER]
    return value
