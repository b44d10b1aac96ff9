"""ResourcePreset: SDL, resolvers and row -> object mapping. Presets are public to every
authenticated caller (GET /resource/presets shows them to anyone too)."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from bai.manager.services import gql_queries as svc

from .context import context_of

QUERIES = '''
  "A resource preset by name."
  resource_preset(name: String!): ResourcePreset

  "Every resource preset."
  resource_presets: [ResourcePreset]
'''

SDL = '''
type ResourcePreset {
  name: String
  resource_slots: JSONString
  shared_memory: BigInt
  scaling_group_name: String
}
'''

query = QueryType()
BINDABLES = (query,)


def preset_obj(row: Any) -> dict[str, Any]:
    return {"name": row.name, "resource_slots": row.resource_slots or {}, "shared_memory": row.shared_memory,
            "scaling_group_name": None}


@query.field("resource_preset")
async def resolve_resource_preset(_: Any, info: Any, name: str) -> dict[str, Any] | None:
    rows = await svc.resource_presets(context_of(info).manager.db, name=name)
    return preset_obj(rows[0]) if rows else None


@query.field("resource_presets")
async def resolve_resource_presets(_: Any, info: Any) -> list[dict[str, Any]]:
    return [preset_obj(r) for r in await svc.resource_presets(context_of(info).manager.db)]
