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
REQUESTER = "bai.requester"  # request[REQUESTER]: Requester


def requester(request: web.Request) -> Requester:
    value: Requester = request[REQUESTER]
    return value
