"""/session: create, info, destroy, execute, logs."""

from __future__ import annotations

from aiohttp import web

from bai.manager import errors
from bai.manager.services import schemas

from .keys import API_VERSION, SESSIONS, requester
from .middlewares import auth_required, read_params

REST_FLUSH_TIMEOUT = 2.0


@auth_required()
async def create(request: web.Request) -> web.Response:
    req = schemas.parse(schemas.CreateSession, await read_params(request))
    result = await request.app[SESSIONS].create(requester(request), req)
    return web.json_response(result, status=201)


@auth_required()
async def info(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    result = await request.app[SESSIONS].info(requester(request), ref, request.query.get("owner_access_key"))
    return web.json_response(result)


@auth_required()
async def destroy(request: web.Request) -> web.Response:
    q = schemas.DestroyQuery.model_validate(dict(request.query))
    result = await request.app[SESSIONS].destroy(
        requester(request), request.match_info["ref"], forced=q.forced, owner_access_key=q.owner_access_key)
    return web.json_response(result)


@auth_required()
async def execute(request: web.Request) -> web.Response:
    params = await read_params(request)
    svc = request.app[SESSIONS]
    if request[API_VERSION][0] < 2:
        params = {"mode": "query", "runId": params.get("runId"), "code": params.get("code", "")}
    req = schemas.parse(schemas.ExecuteRequest, params)
    if req.mode in ("batch", "complete"):
        raise errors.InvalidAPIParameters(f"The {req.mode!r} mode is not supported by this manager yet.")
    if req.mode in ("continue", "input") and not req.run_id:
        raise errors.InvalidAPIParameters("runId is required for continue/input modes")
    route = await svc.route(requester(request), request.match_info["ref"])
    result = await svc.execute(route, mode=req.mode, run_id=req.run_id, code=req.code, opts=req.options,
                               flush_timeout=REST_FLUSH_TIMEOUT)
    return web.json_response({"result": result})


@auth_required()
async def logs(request: web.Request) -> web.Response:
    text = await request.app[SESSIONS].logs(requester(request), request.match_info["ref"])
    return web.json_response({"result": {"logs": text}})


def routes(app: web.Application) -> None:
    app.router.add_post("/session", create)
    app.router.add_post("/session/_/create", create)
    app.router.add_get("/session/{ref}", info)
    app.router.add_delete("/session/{ref}", destroy)
    app.router.add_post("/session/{ref}", execute)
    app.router.add_get("/session/{ref}/logs", logs)
