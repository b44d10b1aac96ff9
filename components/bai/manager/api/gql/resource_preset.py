"""ResourcePreset: SDL, resolvers and row -> object mapping. Presets are public to every
authenticated caller (GET /resource/presets shows them to anyone too); creating, modifying and
deleting them is for superadmins (services.policies)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.services import policies

from .context import context_of

QUERIES = '''
  "A resource preset by name (none without one, as the original)."
  resource_preset(name: String): ResourcePreset

  "Every resource preset."
  resource_presets: [ResourcePreset]
'''

MUTATIONS = '''
  "A new resource preset (superadmin only); ok=false when the name is taken."
  create_resource_preset(name: String!, props: CreateResourcePresetInput!): CreateResourcePreset
  "Changes the given fields of a resource preset (superadmin only)."
  modify_resource_preset(name: String!, props: ModifyResourcePresetInput!): ModifyResourcePreset
  "Deletes a resource preset (superadmin only)."
  delete_resource_preset(name: String!): DeleteResourcePreset
'''

SDL = '''
type ResourcePreset {
  name: String
  resource_slots: JSONString
  shared_memory: BigInt
  scaling_group_name: String
}

input CreateResourcePresetInput {
  "Slot name -> amount of slots the manager knows (decimal; memory also as 4g)."
  resource_slots: JSONString!
  "Bytes or a size such as 1g; less than the preset's mem."
  shared_memory: String
}

input ModifyResourcePresetInput {
  resource_slots: JSONString
  shared_memory: String
}

type CreateResourcePreset {
  ok: Boolean
  msg: String
  resource_preset: ResourcePreset
}

type ModifyResourcePreset {
  ok: Boolean
  msg: String
}

type DeleteResourcePreset {
  ok: Boolean
  msg: String
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def preset_obj(row: Any) -> dict[str, Any]:
    return {"name": row.name, "resource_slots": row.resource_slots or {}, "shared_memory": row.shared_memory,
            "scaling_group_name": None}


@query.field("resource_preset")
async def resolve_resource_preset(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    if name is None:
        return None
    rows = await svc.resource_presets(context_of(info).manager.db, name=name)
    return preset_obj(rows[0]) if rows else None


@query.field("resource_presets")
async def resolve_resource_presets(_: Any, info: Any) -> list[dict[str, Any]]:
    return [preset_obj(r) for r in await svc.resource_presets(context_of(info).manager.db)]


@mutation.field("create_resource_preset")
async def resolve_create(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.create_preset(ctx.manager, ctx.requester, name, props)
    return {"ok": out.ok, "msg": out.msg, "resource_preset": preset_obj(out.row) if out.row is not None else None}


@mutation.field("modify_resource_preset")
async def resolve_modify(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.modify_preset(ctx.manager, ctx.requester, name, props)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("delete_resource_preset")
async def resolve_delete(_: Any, info: Any, name: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.delete_preset(ctx.manager, ctx.requester, name)
    return {"ok": out.ok, "msg": out.msg}
