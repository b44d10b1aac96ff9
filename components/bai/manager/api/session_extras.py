"""/session/{ref}/rename, /status-history, /abusing-report, /direct-access-info,
/shutdown-service and /session/_/sync-agent-registry: the original's smaller session endpoints.

The official client sends rename's and shutdown-service's parameters in the query string of a
POST without a body; a JSON body is read as well (see :func:`.routing.params`)."""

from __future__ import annotations

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictStr

from bai.manager import errors
from bai.manager.services.schemas import SESSION_NAME_SCHEMA, SessionQuery
from bai.manager.services.sessions import extras

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .replies import Empty, _Reply
from .routing import Answer


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"examples": [{"name": "my-renamed-session"}]})
    name: StrictStr = Field(validation_alias=AliasChoices("name", "session_name", "clientSessionToken"),
                            max_length=64, json_schema_extra=SESSION_NAME_SCHEMA)
    owner_access_key: StrictStr | None = Field(None, max_length=64,
                                               description="Act on another keypair's session (admins).")


class ShutdownServiceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"examples": [{"service_name": "ttyd"}]})
    service_name: StrictStr = Field(validation_alias=AliasChoices("service_name", "serviceName", "service"),
                                    pattern=r"^[\w-]{1,64}$")
    owner_access_key: StrictStr | None = Field(None, max_length=64,
                                               description="Act on another keypair's session (admins).")


class SyncAgentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"agent": "i-agent1"}]})
    agent: StrictStr = Field(min_length=1, max_length=64, description="The agent's id.")


class StatusHistory(_Reply):
    result: dict[str, str] = Field(description="Each status the session has been in -> when it entered it "
                                               "(ISO 8601), e.g. {\"PENDING\": ..., \"RUNNING\": ...}.")


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


@auth_required()
async def rename(request: web.Request) -> web.Response:
    req = await routing.params(request, RenameRequest)
    await extras.rename(request.app[CTX], requester(request), _ref(request), req.name, req.owner_access_key)
    return web.Response(status=204)


@auth_required()
async def status_history(request: web.Request) -> web.Response:
    q = routing.query(request, SessionQuery)
    history = await extras.status_history(request.app[CTX], requester(request), _ref(request), q.owner_access_key)
    return web.json_response({"result": history})


@auth_required()
async def abusing_report(request: web.Request) -> web.Response:
    q = routing.query(request, SessionQuery)
    return web.json_response(
        await extras.abusing_report(request.app[CTX], requester(request), _ref(request), q.owner_access_key))


@auth_required()
async def direct_access_info(request: web.Request) -> web.Response:
    q = routing.query(request, SessionQuery)
    return web.json_response(
        await extras.direct_access_info(request.app[CTX], requester(request), _ref(request), q.owner_access_key))


@auth_required()
async def shutdown_service(request: web.Request) -> web.Response:
    req = await routing.params(request, ShutdownServiceRequest)
    await extras.shutdown_service(request.app[CTX], requester(request), _ref(request), req.service_name,
                                  req.owner_access_key)
    return web.Response(status=204)


@auth_required("superadmin")
async def sync_agent_registry(request: web.Request) -> web.Response:
    req = await routing.params(request, SyncAgentRequest)
    await extras.sync_agent_registry(request.app[CTX], req.agent)
    return web.json_response({})


_REF = (errors.SessionNotFound, errors.TooManySessionsMatched, errors.GenericForbidden)
_DONE = (Answer(204, "Done.", media_type=""),)


def routes(app: web.Application) -> None:
    tag = "session"
    routing.add(app, "POST", "/session/{ref}/rename", rename, operation_id="rename_session", tag=tag,
                summary="Rename a RUNNING session (the new name follows creation's rule and is not another live "
                        "session's of the same owner).", body=RenameRequest, answers=_DONE,
                problems=(*_REF, errors.InvalidAPIParameters, errors.SessionAlreadyExists))
    routing.add(app, "GET", "/session/{ref}/status-history", status_history, operation_id="session_status_history",
                tag=tag, summary="When the session entered each status it has been in (also for ended sessions).",
                query=SessionQuery, answers=(Answer(200, "The status history.", StatusHistory),), problems=_REF)
    routing.add(app, "GET", "/session/{ref}/abusing-report", abusing_report, operation_id="session_abusing_report",
                tag=tag, summary="The agents' abuse report of the session: always {} here, as no agent runs an "
                                 "abuse detector.", query=SessionQuery,
                answers=(Answer(200, "Nothing reported.", Empty),), problems=_REF)
    routing.add(app, "GET", "/session/{ref}/direct-access-info", direct_access_info,
                operation_id="session_direct_access_info", tag=tag,
                summary="How to reach a private (system) session directly: always {} here, as private sessions "
                        "(the original's SFTP sessions) cannot be created.", query=SessionQuery,
                answers=(Answer(200, "Nothing to reach directly.", Empty),), problems=_REF)
    routing.add(app, "POST", "/session/{ref}/shutdown-service", shutdown_service,
                operation_id="session_shutdown_service", tag=tag,
                summary="Stop a service (started by start-service) in the session's main kernel; the app "
                        "proxies close their circuits to it.", body=ShutdownServiceRequest, answers=_DONE,
                problems=(*_REF, errors.ObjectNotFound, errors.InvalidAPIParameters, errors.InternalServerError))
    routing.add(app, "POST", "/session/_/sync-agent-registry", sync_agent_registry,
                operation_id="sync_agent_registry", tag=tag,
                summary="Superadmins: reconcile an agent's kernels with the database now (as the periodic "
                        "agent sync does).", body=SyncAgentRequest, answers=(Answer(200, "Done.", Empty),),
                problems=(errors.ObjectNotFound, errors.ServiceUnavailable))
