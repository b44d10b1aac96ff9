"""Version handshake, announcement and the /auth endpoints."""

from __future__ import annotations

from aiohttp import web

from bai.common.auth import API_VERSION

from .keys import requester
from .middlewares import auth_required, read_params

#: What ``GET /`` reports as the manager release: the original's, since clients compare it.
COMPAT_MANAGER_VERSION = "24.03.11"


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "manager": COMPAT_MANAGER_VERSION})


async def announcement(request: web.Request) -> web.Response:
    ann = await request.app["bai.etcd_get"]("manager/announcement")
    return web.json_response({"enabled": bool(ann), "message": ann or ""})


@auth_required()
async def auth_test(request: web.Request) -> web.Response:
    params = await read_params(request)
    requester(request)
    return web.json_response({"authorized": "yes", "echo": params.get("echo")})


@auth_required()
async def auth_role(request: web.Request) -> web.Response:
    r = requester(request)
    return web.json_response({
        "global_role": "superadmin" if r.is_superadmin else "user",
        "domain_role": "admin" if r.role in ("admin", "superadmin") else "user",
        "group_role": "user",
    })


def routes(app: web.Application) -> None:
    app.router.add_get("/", hello)
    app.router.add_get("/manager/announcement", announcement)
    for path in ("/auth", "/auth/test"):
        app.router.add_get(path, auth_test)
        app.router.add_post(path, auth_test)
    app.router.add_get("/auth/role", auth_role)
