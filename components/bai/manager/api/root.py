"""Version handshake and announcement (the /auth endpoints live in ``auth``)."""

from __future__ import annotations

from aiohttp import web

from bai.common.auth import API_VERSION

from .keys import CTX

#: What ``GET /`` reports as the manager release: the original's, since clients compare it.
COMPAT_MANAGER_VERSION = "24.03.11"


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "manager": COMPAT_MANAGER_VERSION})


async def announcement(request: web.Request) -> web.Response:
    ann = await request.app[CTX].etcd.get("manager/announcement")
    return web.json_response({"enabled": bool(ann), "message": ann or ""})


def routes(app: web.Application) -> None:
    app.router.add_get("/", hello)
    app.router.add_get("/manager/announcement", announcement)
