"""/manager and /config: the operator's REST endpoints (the original's ``manager status|freeze|
unfreeze``, ``announcement update``, ``manager scheduler include-agents|exclude-agents`` and raw
shared-config access). Reads of the status and the announcement are public; every write is
superadmin-only (401 for anyone else, as the original's role decorators answer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services import manager_admin as svc

from . import config_info, routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

Key = Annotated[str, Field(min_length=1, max_length=512)]


class _Params(BaseModel):
    # strict: a JSON ``0`` is not ``false`` and ``"1"`` is not a number
    model_config = ConfigDict(extra="forbid", strict=True)


class StatusParams(_Params):
    status: Literal["running", "frozen"] = Field(description="`frozen`: no new sessions, mutations or config changes.")
    force_kill: bool = Field(False, description="When freezing, also terminate every session still alive.")


class AnnouncementParams(_Params):
    enabled: bool = True
    message: Annotated[str, Field(max_length=4096)] | None = None


class SchedulerOpParams(_Params):
    op: Literal["include-agents", "exclude-agents"]
    args: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=1000)]


class ConfigGetParams(_Params):
    key: Key
    prefix: bool = Field(False, description="Everything under `key`, as a nested object.")


class ConfigSetParams(_Params):
    key: Key
    value: Any = Field(description="A string, number or boolean, or a nested object of them (one key per leaf).")


class ConfigDeleteParams(_Params):
    key: Key
    prefix: bool = False


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManagerNode(_Reply):
    id: str
    num_proc: int
    service_addr: str | None
    heartbeat_timeout: float
    ssl_enabled: bool
    active_sessions: int
    status: str
    version: str
    api_version: str


class ManagerStatus(_Reply):
    nodes: list[ManagerNode]
    status: Literal["running", "frozen"]
    active_sessions: int


class SchedulerOpResult(_Reply):
    agents: list[str] = Field(description="The agents changed.")


class ConfigValue(_Reply):
    result: Any = Field(description="The value (null when absent), or a nested object with `prefix`.")


class Done(_Reply):
    result: Literal["ok"]


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await svc.status_report(request.app[CTX]))


@auth_required("superadmin")
async def put_status(request: web.Request) -> web.Response:
    params = await routing.params(request, StatusParams)
    await svc.set_status(request.app[CTX], requester(request), params.status, params.force_kill)
    return web.Response(status=204)


@auth_required("superadmin")
async def post_announcement(request: web.Request) -> web.Response:
    params = await routing.params(request, AnnouncementParams)
    await svc.set_announcement(request.app[CTX], requester(request), params.enabled, params.message)
    return web.Response(status=204)


@auth_required("superadmin")
async def scheduler_operation(request: web.Request) -> web.Response:
    params = await routing.params(request, SchedulerOpParams)
    changed = await svc.scheduler_operation(request.app[CTX], requester(request), params.op, params.args)
    return web.json_response({"agents": changed})


@auth_required("superadmin")
async def config_get(request: web.Request) -> web.Response:
    params = await routing.params(request, ConfigGetParams)
    return web.json_response({"result": await svc.config_get(request.app[CTX], requester(request), params.key,
                                                             params.prefix)})


@auth_required("superadmin")
async def config_set(request: web.Request) -> web.Response:
    params = await routing.params(request, ConfigSetParams)
    await svc.config_set(request.app[CTX], requester(request), params.key, params.value)
    return web.json_response({"result": "ok"})


@auth_required("superadmin")
async def config_delete(request: web.Request) -> web.Response:
    params = await routing.params(request, ConfigDeleteParams)
    await svc.config_delete(request.app[CTX], requester(request), params.key, params.prefix)
    return web.json_response({"result": "ok"})


_WRITE_PROBLEMS = (errors.AuthorizationFailed, errors.InvalidAPIParameters, svc.ServerFrozen)


def routes(app: web.Application) -> None:
    config_info.routes(app)  # the read-only /config helpers and /resource/recalculate-usage
    routing.add(app, "GET", "/manager/status", get_status, operation_id="get_manager_status", tag="manager",
                summary="Every manager's status and the active sessions (public).",
                answers=(Answer(200, "The status.", ManagerStatus),))
    routing.add(app, "PUT", "/manager/status", put_status, operation_id="set_manager_status", tag="manager",
                body=StatusParams, summary="Freeze or unfreeze the cluster (superadmin).",
                answers=(Answer(204, "Done.", media_type=""),), problems=_WRITE_PROBLEMS)
    routing.add(app, "POST", "/manager/announcement", post_announcement, operation_id="set_announcement",
                tag="manager", body=AnnouncementParams, summary="Set or clear the announcement (superadmin).",
                answers=(Answer(204, "Done.", media_type=""),), problems=_WRITE_PROBLEMS)
    routing.add(app, "POST", "/manager/scheduler/operation", scheduler_operation, operation_id="scheduler_operation",
                tag="manager", body=SchedulerOpParams,
                summary="Let the scheduler place new sessions on agents again, or no longer (superadmin).",
                answers=(Answer(200, "The agents changed.", SchedulerOpResult),), problems=_WRITE_PROBLEMS)
    routing.add(app, "POST", "/config/get", config_get, operation_id="config_get", tag="manager",
                body=ConfigGetParams, summary="Read the shared configuration in etcd (superadmin).",
                answers=(Answer(200, "The value.", ConfigValue),), problems=_WRITE_PROBLEMS)
    routing.add(app, "POST", "/config/set", config_set, operation_id="config_set", tag="manager",
                body=ConfigSetParams, summary="Write the shared configuration in etcd (superadmin).",
                answers=(Answer(200, "Done.", Done),), problems=_WRITE_PROBLEMS)
    routing.add(app, "POST", "/config/delete", config_delete, operation_id="config_delete", tag="manager",
                body=ConfigDeleteParams, summary="Delete from the shared configuration in etcd (superadmin).",
                answers=(Answer(200, "Done.", Done),), problems=_WRITE_PROBLEMS)
