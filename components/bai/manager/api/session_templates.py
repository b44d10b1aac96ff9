"""/template/session and /template/cluster (stored templates), and creating a session from a
task template (/session/_/create-from-template) through the one session-creation path."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from bai.manager import errors
from bai.manager.services import session_templates as templates
from bai.manager.services.manager_admin import ServerFrozen
from bai.manager.services.schemas import parse

from . import routing
from .keys import CTX, SESSIONS, requester
from .middlewares import auth_required
from .replies import SessionCreated
from .routing import Answer

#: The official client sends ``GET /template/session`` its ``all`` flag as a JSON body: read at
#: most this much of one.
MAX_LIST_BODY = 4096


class TemplateCreated(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(description="The template's id (hex).")
    user: str = Field(description="The owner's user id (hex).")


class TemplateListed(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None
    id: str
    created_at: str
    is_owner: bool
    user: str
    group: str | None
    user_email: str
    group_name: str | None
    domain_name: str
    type: str
    template: dict[str, Any]


class TemplatesCreated(RootModel[list[TemplateCreated]]):
    pass


class TemplateList(RootModel[list[TemplateListed]]):
    pass


class ClusterCreated(BaseModel):
    model_config = ConfigDict(extra="allow")
    kernelId: str = Field(description="The new session's id (the original's key name).")
    status: str
    servicePorts: list[dict[str, Any]] = Field(default_factory=list)
    created: bool


class Success(BaseModel):
    success: bool


def _kind(request: web.Request) -> templates.Kind:
    return templates.CLUSTER if request.path.startswith("/template/cluster") else templates.TASK


@auth_required()
async def create(request: web.Request) -> web.Response:
    req = await routing.params(request, templates.TemplateCreate)
    created = await templates.create(request.app[CTX], requester(request), _kind(request), req)
    return web.json_response(created)


async def _body_flags(request: web.Request) -> dict[str, Any]:
    """A small JSON object sent as a GET body (the official client's ``list --all``); else {}."""
    if not request.can_read_body or request.content_length is None or request.content_length > MAX_LIST_BODY:
        return {}
    try:
        data = json.loads(await request.read())
    except (ValueError, RecursionError):
        return {}
    return {k: v for k, v in data.items() if k in ("all", "group_id")} if isinstance(data, dict) else {}


@auth_required()
async def list_templates(request: web.Request) -> web.Response:
    q = routing.query(request, templates.TemplateListQuery)
    flags = await _body_flags(request)
    if flags:
        q = parse(templates.TemplateListQuery, {**flags, **request.query})
    listed = await templates.list_templates(request.app[CTX], requester(request), _kind(request), q)
    return web.json_response(listed)


@auth_required()
async def get(request: web.Request) -> web.Response:
    q = routing.query(request, templates.TemplateGetQuery)
    document = await templates.get(request.app[CTX], requester(request), _kind(request),
                                   request.match_info["template_id"], q.owner_access_key)
    if q.body_format == "yaml":
        return web.Response(text=templates.to_yaml(document), content_type="text/yaml")
    return web.json_response(document)


@auth_required()
async def update(request: web.Request) -> web.Response:
    req = await routing.params(request, templates.TemplateCreate)
    await templates.update(request.app[CTX], requester(request), _kind(request),
                           request.match_info["template_id"], req)
    return web.json_response({"success": True})


@auth_required()
async def delete(request: web.Request) -> web.Response:
    q = routing.query(request, templates.TemplateRefQuery)
    await templates.delete(request.app[CTX], requester(request), _kind(request),
                           request.match_info["template_id"], q.owner_access_key)
    return web.json_response({"success": True})


@auth_required()
async def create_from_template(request: web.Request) -> web.Response:
    req = await routing.params(request, templates.CreateFromTemplate)
    who = requester(request)
    create_req = await templates.session_request(request.app[CTX], who, req)
    result = await request.app[SESSIONS].create(who, create_req)
    return web.json_response(result, status=201)


@auth_required()
async def create_cluster(request: web.Request) -> web.Response:
    req = await routing.params(request, templates.CreateCluster)
    who = requester(request)
    create_req = await templates.cluster_request(request.app[CTX], who, req)
    result = await request.app[SESSIONS].create(who, create_req)
    return web.json_response({
        "kernelId": result["sessionId"], "status": result["status"],
        "servicePorts": result.get("servicePorts", result.get("service_ports", [])),
        "created": result["created"]}, status=201)


def routes(app: web.Application) -> None:
    ref = (errors.TaskTemplateNotFound, errors.InsufficientPrivilege, errors.GenericForbidden)
    for base, what in (("/template/session", "session (task)"), ("/template/cluster", "cluster")):
        kind = "session" if base.endswith("session") else "cluster"
        one = base + "/{template_id}"
        routing.add(app, "POST", base, create, operation_id=f"create_{kind}_template", tag="template",
                    summary=f"Store {what} templates (JSON or YAML; one or a list): all of them or none.",
                    body=templates.TemplateCreate,
                    answers=(Answer(200, "The new templates' ids.", TemplatesCreated),),
                    problems=(errors.InsufficientPrivilege, errors.GenericForbidden))
        routing.add(app, "GET", base, list_templates, operation_id=f"list_{kind}_templates", tag="template",
                    summary=f"The {what} templates the caller may read (all: superadmins every one, "
                            "admins their domain's).", query=templates.TemplateListQuery,
                    answers=(Answer(200, "The templates.", TemplateList),))
        routing.add(app, "GET", one, get, operation_id=f"get_{kind}_template", tag="template",
                    summary=f"One {what} template's document, as YAML (default) or JSON.",
                    query=templates.TemplateGetQuery,
                    answers=(Answer(200, "The document (format=json).", None),
                             Answer(200, "The document (format=yaml).", None, media_type="text/yaml")),
                    problems=ref)
        routing.add(app, "PUT", one, update, operation_id=f"update_{kind}_template", tag="template",
                    summary=f"Replace a {what} template's document (its owner or a domain admin).",
                    body=templates.TemplateCreate, answers=(Answer(200, "Updated.", Success),), problems=ref)
        routing.add(app, "DELETE", one, delete, operation_id=f"delete_{kind}_template", tag="template",
                    summary=f"Delete a {what} template (its owner or a domain admin).",
                    query=templates.TemplateRefQuery, answers=(Answer(200, "Deleted.", Success),), problems=ref)
    routing.add(app, "POST", "/session/_/create-from-template", create_from_template,
                operation_id="create_session_from_template", tag="session",
                summary="Create a session from a task template: the request's fields override the template's.",
                body=templates.CreateFromTemplate,
                answers=(Answer(201, "The session (created, or reused when reuseIfExists).", SessionCreated),),
                problems=(errors.TaskTemplateNotFound, errors.ImageNotFound, errors.ScalingGroupNotFound,
                          errors.SessionAlreadyExists, errors.QuotaExceeded, errors.InsufficientPrivilege,
                          errors.GenericForbidden, ServerFrozen))
    routing.add(app, "POST", "/session/_/create-cluster", create_cluster,
                operation_id="create_session_from_cluster_template", tag="session",
                summary="Create a cluster session from a cluster template (its nodes' replicas make the "
                        "cluster size; every node runs the same image).",
                body=templates.CreateCluster,
                answers=(Answer(201, "The session (key kernelId, as the original's).", ClusterCreated),),
                problems=(errors.TaskTemplateNotFound, errors.ImageNotFound, errors.ScalingGroupNotFound,
                          errors.SessionAlreadyExists, errors.QuotaExceeded, errors.InsufficientPrivilege,
                          errors.GenericForbidden, ServerFrozen))
