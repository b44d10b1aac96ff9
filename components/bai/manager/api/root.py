"""Version handshake and announcement (the /auth endpoints live in ``auth``)."""

from __future__ import annotations

from aiohttp import web

from bai.common.auth import API_VERSION

from . import routing
from .keys import CTX
from .replies import Announcement, Hello
from .routing import Answer

#: What ``GET /`` reports as the manager release: the original's, since clients compare it.
COMPAT_MANAGER_VERSION = "24.03.11"


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "manager": COMPAT_MANAGER_VERSION})


async def announcement(request: web.Request) -> web.Response:
    ann = await request.app[CTX].etcd.get("manager/announcement")
    return web.json_response({"enabled": bool(ann), "message": ann or ""})


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/", hello, operation_id="hello", tag="meta", summary="API version handshake.",
                answers=(Answer(200, "The API and manager versions.", Hello),))
    routing.add(app, "GET", "/manager/announcement", announcement, operation_id="get_announcement", tag="meta",
                summary="The operator's announcement, if any.",
                answers=(Answer(200, "The announcement.", Announcement),))
