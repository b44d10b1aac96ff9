"""The original's read-only /config helpers the official client calls (``admin resource
query-slots|vfolder-types|docker-registries``) and ``POST /resource/recalculate-usage``
(``admin resource recalculate-usage``). The raw etcd access under /config lives in manager.py."""

from __future__ import annotations

from aiohttp import web

from bai.manager import errors
from bai.manager.services import images as image_svc
from bai.manager.services import resources as resource_svc

from . import folders, routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer


@auth_required()
async def resource_slots(request: web.Request) -> web.Response:
    return web.json_response(await resource_svc.slot_types(request.app[CTX]))


@auth_required("superadmin")
async def docker_registries(request: web.Request) -> web.Response:
    return web.json_response(await image_svc.registry_urls(request.app[CTX], requester(request)))


@auth_required("superadmin")
async def recalculate_usage(request: web.Request) -> web.Response:
    await resource_svc.recalculate_usage(request.app[CTX], requester(request))
    return web.json_response({})  # the original's answer


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/config/resource-slots", resource_slots, operation_id="config_resource_slots",
                tag="manager", summary="The resource slots the agents offer, each with its type.",
                answers=(Answer(200, "Slot name -> `count` or `bytes`, e.g. {\"cpu\": \"count\", \"mem\": \"bytes\"}."),))
    # the same answer as /folders/_/allowed-types, under the path the original's client reads
    routing.add(app, "GET", "/config/vfolder-types", folders.allowed_types, operation_id="config_vfolder_types",
                tag="manager", summary="The enabled folder ownership types (user, group).",
                answers=(Answer(200, "The types, e.g. [\"user\", \"group\"]."),))
    routing.add(app, "GET", "/config/docker-registries", docker_registries,
                operation_id="config_docker_registries", tag="manager",
                summary="Every container registry's URL by hostname (superadmin).",
                answers=(Answer(200, "Hostname -> URL."),), problems=(errors.GenericForbidden,))
    routing.add(app, "POST", "/resource/recalculate-usage", recalculate_usage, operation_id="recalculate_usage",
                tag="resource", summary="Recount what each agent's kernels occupy from the kernel rows (superadmin).",
                answers=(Answer(200, "Done: an empty object."),), problems=(errors.GenericForbidden,))
