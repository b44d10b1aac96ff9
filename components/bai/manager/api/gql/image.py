"""Image: SDL, resolvers and object mapping of the original's image queries and mutations
(``image``, ``images``; ``rescan_images``, ``alias_image``, ``dealias_image``, ``forget_image``,
``forget_image_by_id``, ``untag_image_from_registry``). Who sees and may change what is decided
in services/images.py."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager import errors
from bai.manager.services import images as svc

from .context import context_of

QUERIES = '''
  "An image by canonical name or alias, if the caller may use it."
  image(id: String, reference: String, architecture: String = "x86_64"): Image

  """
  The images the caller may use (superadmins and monitors: all): without `is_operation` the
  ordinary ones, with it the operation images; `is_installed` keeps those some live agent has
  (or has not).
  """
  images(is_installed: Boolean, is_operation: Boolean): [Image]

  "The caller's own customized images (sessions saved with POST /session/{ref}/imagify)."
  customized_images: [Image]
'''

MUTATIONS = '''
  "Scan a configured registry (all of them without `registry`) in the background (superadmin)."
  rescan_images(registry: String): RescanImages

  "A new alias of an image (superadmin); ok=false when the alias exists or the image does not."
  alias_image(alias: String!, target: String!, architecture: String = "x86_64"): AliasImage

  "Remove an alias (superadmin)."
  dealias_image(alias: String!): DealiasImage

  "Forget an image (the database row only; registries and agents keep their copies; superadmin, or the owner of a customized image)."
  forget_image(reference: String!, architecture: String = "x86_64"): ForgetImage

  "Forget an image by its id (superadmin, or the owner of a customized image)."
  forget_image_by_id(image_id: String!): ForgetImageById

  "Delete an image's manifest from its registry (its tags there go with it) and forget it (superadmin, or the owner of a customized image)."
  untag_image_from_registry(id: String!): UntagImageFromRegistry
'''

SDL = '''
type KVPair {
  key: String
  value: String
}

type ResourceLimit {
  key: String
  min: String
  max: String
}

type Image {
  id: UUID
  name: String
  humanized_name: String
  tag: String
  registry: String
  architecture: String
  is_local: Boolean
  digest: String
  labels: [KVPair]
  aliases: [String]
  size_bytes: BigInt
  resource_limits: [ResourceLimit]
  supported_accelerators: [String]
  installed: Boolean
  "Agents that have the image (admins only; null for users)."
  installed_agents: [String]
}

type RescanImages {
  ok: Boolean
  msg: String
  "Follow it with GET /events/background-task?task_id=..."
  task_id: UUID
}

type AliasImage {
  ok: Boolean
  msg: String
}

type DealiasImage {
  ok: Boolean
  msg: String
}

type ForgetImage {
  ok: Boolean
  msg: String
}

type ForgetImageById {
  ok: Boolean
  msg: String
}

type UntagImageFromRegistry {
  ok: Boolean
  msg: String
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def image_obj(i: svc.ImageInfo) -> dict[str, Any]:
    return {
        "id": i.id, "name": i.name, "humanized_name": i.name, "tag": i.tag, "registry": i.registry,
        "architecture": i.architecture, "is_local": i.is_local, "digest": i.digest,
        "labels": [{"key": k, "value": v} for k, v in sorted(i.labels.items())], "aliases": i.aliases,
        "size_bytes": i.size_bytes, "resource_limits": i.resource_limits,
        "supported_accelerators": i.supported_accelerators, "installed": i.installed,
        "installed_agents": i.installed_agents,
    }


@query.field("image")
async def resolve_image(_: Any, info: Any, id: str | None = None, reference: str | None = None,
                        architecture: str = "x86_64") -> dict[str, Any] | None:
    ctx = context_of(info)
    if id is not None:
        found = await svc.get_image_by_id(ctx.manager, ctx.requester, id)
    elif reference is not None:
        found = await svc.get_image(ctx.manager, ctx.requester, reference, architecture)
    else:
        raise errors.InvalidAPIParameters("give either id or reference")
    return None if found is None else image_obj(found)


@query.field("images")
async def resolve_images(_: Any, info: Any, is_installed: bool | None = None,
                         is_operation: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    found = await svc.list_images(ctx.manager, ctx.requester, is_installed=is_installed, is_operation=is_operation)
    return [image_obj(i) for i in found]


@query.field("customized_images")
async def resolve_customized_images(_: Any, info: Any) -> list[dict[str, Any]]:
    ctx = context_of(info)
    return [image_obj(i) for i in await svc.list_customized(ctx.manager, ctx.requester)]


@mutation.field("rescan_images")
async def resolve_rescan(_: Any, info: Any, registry: str | None = None) -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.rescan_images(ctx.manager, ctx.requester, registry)
    return {"ok": out.ok, "msg": out.msg, "task_id": out.row}


@mutation.field("alias_image")
async def resolve_alias(_: Any, info: Any, alias: str, target: str, architecture: str = "x86_64") -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.alias_image(ctx.manager, ctx.requester, alias, target, architecture)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("dealias_image")
async def resolve_dealias(_: Any, info: Any, alias: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.dealias_image(ctx.manager, ctx.requester, alias)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("forget_image")
async def resolve_forget(_: Any, info: Any, reference: str, architecture: str = "x86_64") -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.forget_image(ctx.manager, ctx.requester, reference, architecture)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("forget_image_by_id")
async def resolve_forget_by_id(_: Any, info: Any, image_id: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.forget_image_by_id(ctx.manager, ctx.requester, image_id)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("untag_image_from_registry")
async def resolve_untag(_: Any, info: Any, id: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await svc.untag_image_from_registry(ctx.manager, ctx.requester, id)
    return {"ok": out.ok, "msg": out.msg}
