"""/session: create, info, destroy, restart, execute, logs."""

from __future__ import annotations

from aiohttp import web

from bai.manager import errors
from bai.manager.services import schemas
from bai.manager.services.manager_admin import ServerFrozen

from . import app_proxy, routing, session_extras, session_files, session_images
from .keys import SESSIONS, requester
from .middlewares import auth_required
from .replies import Executed, Logs, SessionCreated, SessionDestroyed, SessionInfo
from .routing import Answer, Link

REST_FLUSH_TIMEOUT = 2.0


@auth_required()
async def create(request: web.Request) -> web.Response:
    req = await routing.params(request, schemas.CreateSession)
    result = await request.app[SESSIONS].create(requester(request), req)
    return web.json_response(result, status=201)


@auth_required()
async def info(request: web.Request) -> web.Response:
    q = routing.query(request, schemas.SessionQuery)
    result = await request.app[SESSIONS].info(requester(request), request.match_info["ref"], q.owner_access_key)
    return web.json_response(result)


@auth_required()
async def destroy(request: web.Request) -> web.Response:
    q = routing.query(request, schemas.DestroyQuery)
    result = await request.app[SESSIONS].destroy(
        requester(request), request.match_info["ref"], forced=q.forced, owner_access_key=q.owner_access_key)
    return web.json_response(result)


@auth_required()
async def execute(request: web.Request) -> web.Response:
    req = await routing.params(request, schemas.ExecuteRequest)
    svc = request.app[SESSIONS]
    if req.mode in ("continue", "input") and not req.run_id:
        raise errors.InvalidAPIParameters("runId is required for continue/input modes")
    route = await svc.route(requester(request), request.match_info["ref"])
    if req.mode == "complete":  # the older way to ask for completions
        completed = await session_files.SessionFiles(svc.ctx).complete(route, req.code, req.options or {})
        return web.json_response({"result": completed})
    result = await svc.execute(route, mode=req.mode, run_id=req.run_id, code=req.code, opts=req.options,
                               flush_timeout=REST_FLUSH_TIMEOUT)
    if req.mode in ("query", "batch"):  # one count per run, not per continue/input call
        await svc.count_query(route.session_id)
    return web.json_response({"result": result})


@auth_required()
async def restart(request: web.Request) -> web.Response:
    q = routing.query(request, schemas.SessionQuery)
    await request.app[SESSIONS].restart(requester(request), request.match_info["ref"], q.owner_access_key)
    return web.Response(status=204)


@auth_required()
async def logs(request: web.Request) -> web.Response:
    q = routing.query(request, schemas.SessionQuery)
    text = await request.app[SESSIONS].logs(requester(request), request.match_info["ref"], q.owner_access_key)
    return web.json_response({"result": {"logs": text}})


@auth_required()
async def task_logs(request: web.Request) -> web.Response:
    q = routing.query(request, schemas.TaskLogsQuery)
    text = await request.app[SESSIONS].task_logs(requester(request), q.task_id)
    return web.Response(text=text, content_type="text/plain")


_BY_NAME = {"ref": "$response.body#/sessionName"}
_SESSION_LINKS = {
    "info": Link("get_session", _BY_NAME, "The session just created, by name."),
    "execute": Link("execute", _BY_NAME),
    "logs": Link("get_logs", _BY_NAME),
    "destroy": Link("destroy_session", _BY_NAME),
}
_REF = (errors.SessionNotFound, errors.TooManySessionsMatched, errors.InsufficientPrivilege)


def routes(app: web.Application) -> None:
    created = (Answer(201, "The session (created, or reused when reuseIfExists).", SessionCreated),)
    create_problems = (errors.ImageNotFound, errors.ScalingGroupNotFound, errors.SessionAlreadyExists,
                       errors.QuotaExceeded, errors.InsufficientPrivilege, ServerFrozen)
    routing.add(app, "POST", "/session", create, operation_id="create_session", tag="session",
                summary="Create a session (or reuse a live one of the same name).", body=schemas.CreateSession,
                answers=created, problems=create_problems, links=_SESSION_LINKS)
    routing.add(app, "POST", "/session/_/create", create, operation_id="create_session_legacy", tag="session",
                summary="Create a session (the original's older path).", body=schemas.CreateSession,
                answers=created, problems=create_problems)
    routing.add(app, "GET", "/session/{ref}", info, operation_id="get_session", tag="session",
                summary="A session's information, by name or id.", query=schemas.SessionQuery,
                answers=(Answer(200, "The session.", SessionInfo),), problems=_REF)
    routing.add(app, "DELETE", "/session/{ref}", destroy, operation_id="destroy_session", tag="session",
                summary="Destroy a session (cancel it when still pending).", query=schemas.DestroyQuery,
                answers=(Answer(200, "The last statistics of the session.", SessionDestroyed),),
                problems=(*_REF, errors.GenericForbidden))
    routing.add(app, "PATCH", "/session/{ref}", restart, operation_id="restart_session", tag="session",
                summary="Restart the session's kernels: fresh user-code processes in the same containers "
                        "(variables are gone); the session stays RUNNING.", query=schemas.SessionQuery,
                answers=(Answer(204, "Restarted.", media_type=""),),
                problems=(*_REF, errors.InvalidAPIParameters, errors.GenericForbidden, errors.KernelRestartFailed))
    routing.add(app, "POST", "/session/{ref}", execute, operation_id="execute", tag="session",
                summary="Run code in the session (query or batch mode; continue/input for a run in progress).",
                body=schemas.ExecuteRequest, answers=(Answer(200, "What the run produced so far.", Executed),),
                problems=(*_REF, errors.ServiceUnavailable))
    # before /session/{ref}/logs, which would take "_" for a session's name
    routing.add(app, "GET", "/session/_/logs", task_logs, operation_id="get_task_logs", tag="session",
                summary="The container log of a batch task, by a kernel's or its session's id (`taskId`), "
                        "as plain text.", query=schemas.TaskLogsQuery,
                answers=(Answer(200, "The log.", media_type="text/plain"),),
                problems=(*_REF, errors.InvalidAPIParameters))
    routing.add(app, "GET", "/session/{ref}/logs", logs, operation_id="get_logs", tag="session",
                summary="The container logs of the session's main kernel (of a session that has ended: "
                        "the last of them, kept when its container was removed).", query=schemas.SessionQuery,
                answers=(Answer(200, "The logs.", Logs),),
                problems=(*_REF, errors.InvalidAPIParameters, errors.GenericForbidden))
    session_files.routes(app)  # interrupt, complete, upload, download, files
    app_proxy.routes(app)  # start-service, the apps and their tunnels
    session_images.routes(app)  # imagify
    session_extras.routes(app)  # rename, status-history, abusing-report, shutdown-service, ...
