"""/resource: the resource presets and what of them the caller may allocate now (the original's
``GET /resource/presets`` and ``POST /resource/check-presets``, as captured in wire/02 and 03)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services import resources as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

SlotMap = dict[str, str]  # slot name -> decimal string ("Infinity" / "NaN" where the original says so)


class CheckPresetsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scaling_group: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Only this resource group (it must be one the caller may use).")
    group: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        "default", description="The project (name or id) whose limits apply; the caller must belong to it.")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class Preset(_Reply):
    name: str
    shared_memory: str | None = Field(description="Bytes as a decimal string, or null.")
    resource_slots: SlotMap


class PresetList(_Reply):
    presets: list[Preset]


class CheckedPreset(Preset):
    allocatable: bool = Field(description="Some agent has room for it and the caller's limits allow it.")


class GroupUse(_Reply):
    using: SlotMap
    remaining: SlotMap


class PresetCheck(_Reply):
    keypair_limits: SlotMap
    keypair_using: SlotMap
    keypair_remaining: SlotMap
    scaling_group_remaining: SlotMap
    scaling_groups: dict[str, GroupUse]
    presets: list[CheckedPreset]
    group_limits: SlotMap
    group_using: SlotMap
    group_remaining: SlotMap


@auth_required()
async def list_presets(request: web.Request) -> web.Response:
    return web.json_response({"presets": await svc.presets(request.app[CTX])})


@auth_required()
async def check_presets(request: web.Request) -> web.Response:
    params = await routing.params(request, CheckPresetsParams)
    result = await svc.check_presets(request.app[CTX], requester(request), scaling_group=params.scaling_group,
                                     group=params.group)
    return web.json_response(result)


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/resource/presets", list_presets, operation_id="list_presets", tag="resource",
                summary="Every resource preset.", answers=(Answer(200, "The presets.", PresetList),))
    routing.add(app, "POST", "/resource/check-presets", check_presets, operation_id="check_presets",
                tag="resource", body=CheckPresetsParams,
                summary="The caller's limits and use, the free capacity of its resource groups and which "
                        "presets fit now.",
                answers=(Answer(200, "Limits, use, remaining capacity and the presets.", PresetCheck),),
                problems=(errors.InvalidAPIParameters,))
