"""Domain: SDL, resolvers and row -> object mapping (superadmins list them; anyone reads their own)."""

from __future__ import annotations

from typing import Any

from ariadne import ObjectType, QueryType

from bai.manager import errors
from bai.manager.services import gql_queries as svc

from .context import context_of

QUERIES = '''
  "A domain; the caller's own when `name` is omitted (others' only for superadmins)."
  domain(name: String): Domain

  "Every domain (superadmin only)."
  domains(is_active: Boolean): [Domain]
'''

SDL = '''
type Domain {
  name: String
  description: String
  is_active: Boolean
  created_at: DateTime
  modified_at: DateTime
  total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString
  allowed_docker_registries: [String]
  integration_id: String
  scaling_groups: [String]
}
'''

query = QueryType()
domain_type = ObjectType("Domain")
BINDABLES = (query, domain_type)


def domain_obj(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active,
        "created_at": row.created_at, "modified_at": row.created_at,
        "total_resource_slots": row.total_resource_slots or {}, "allowed_vfolder_hosts": {},
        "allowed_docker_registries": row.allowed_docker_registries or [], "integration_id": None,
    }


@query.field("domain")
async def resolve_domain(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    req = ctx.requester
    name = req.domain_name if name is None else name
    if not svc.reads_all(req) and name != req.domain_name:
        raise errors.InsufficientPrivilege()
    row = await svc.domain(ctx.manager.db, name)
    return None if row is None else domain_obj(row)


@query.field("domains")
async def resolve_domains(_: Any, info: Any, is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    return [domain_obj(r) for r in await svc.domains(ctx.manager.db, is_active=is_active)]


@domain_type.field("scaling_groups")
async def resolve_scaling_groups(obj: dict[str, Any], info: Any) -> list[str]:
    rows = await svc.scaling_groups(context_of(info).manager.db, domain_name=obj["name"])
    return [r.name for r in rows]
