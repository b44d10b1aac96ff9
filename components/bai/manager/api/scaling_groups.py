"""/scaling-groups: the resource groups the caller may use for a project (the official client's
``ScalingGroup.list_available``, which reads ``scaling_groups[].name``)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bai.manager import errors
from bai.manager.services import available_sgroups as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

_Ref = Annotated[str, Field(min_length=1, max_length=64)]


class AvailableParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: _Ref | None = Field(None, description="The project, by name or id (required; or group_id / group_name).")
    group_id: _Ref | None = Field(None, description="Alias of group.")
    group_name: _Ref | None = Field(None, description="Alias of group.")

    @model_validator(mode="after")
    def _one_project(self) -> AvailableParams:
        if self.project is None:
            raise ValueError("group (the project's name or id) is required")
        return self

    @property
    def project(self) -> str | None:
        return self.group or self.group_id or self.group_name


class GroupName(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class AvailableGroups(BaseModel):
    model_config = ConfigDict(extra="allow")
    scaling_groups: list[GroupName]


@auth_required()
async def list_available(request: web.Request) -> web.Response:
    params = routing.query(request, AvailableParams)
    assert params.project is not None  # the model insists
    names = await svc.available(request.app[CTX], requester(request), params.project)
    return web.json_response({"scaling_groups": [{"name": n} for n in names]})


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/scaling-groups", list_available, operation_id="list_available_scaling_groups",
                tag="resource", query=AvailableParams,
                summary="The resource groups the caller may run sessions in for a project (users: public ones).",
                answers=(Answer(200, "Their names, in name order.", AvailableGroups),),
                problems=(errors.InvalidAPIParameters,))
