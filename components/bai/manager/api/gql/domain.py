"""Domain: SDL, resolvers and row -> object mapping (superadmins list them; anyone reads their own)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from bai.manager import errors
from bai.manager.services import gql_queries as svc
from bai.manager.services.accounts import domains as accounts
from bai.manager.services.accounts.outcome import Outcome

from .context import context_of

QUERIES = '''
  "A domain; the caller's own when `name` is omitted (others' only for superadmins)."
  domain(name: String): Domain

  "Every domain (superadmin only)."
  domains(is_active: Boolean): [Domain]
'''

MUTATIONS = '''
  "A new domain (superadmin)."
  create_domain(name: String!, props: DomainInput!): CreateDomain

  "Change a domain, its name included (superadmin)."
  modify_domain(name: String!, props: ModifyDomainInput!): ModifyDomain

  "Soft delete: the domain becomes inactive (superadmin)."
  delete_domain(name: String!): DeleteDomain

  "Hard delete of a domain without users, projects or sessions (superadmin)."
  purge_domain(name: String!): PurgeDomain
'''

SDL = '''
input DomainInput {
  description: String = ""
  is_active: Boolean = true
  "Slot limits as a JSON object of slot name to amount; sizes like 32g allowed for mem."
  total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString
  allowed_docker_registries: [String]
  integration_id: String
}

"Fields left out or null stay as they are; `name` renames the domain."
input ModifyDomainInput {
  name: String
  description: String
  is_active: Boolean
  total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString
  allowed_docker_registries: [String]
  integration_id: String
}

type CreateDomain {
  ok: Boolean
  msg: String
  domain: Domain
}

type ModifyDomain {
  ok: Boolean
  msg: String
  domain: Domain
}

type DeleteDomain {
  ok: Boolean
  msg: String
}

type PurgeDomain {
  ok: Boolean
  msg: String
}

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
mutation = MutationType()
domain_type = ObjectType("Domain")
BINDABLES = (query, mutation, domain_type)


def domain_obj(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active,
        "created_at": row.created_at, "modified_at": row.modified_at,
        "total_resource_slots": row.total_resource_slots or {},
        "allowed_vfolder_hosts": row.allowed_vfolder_hosts or {},
        "allowed_docker_registries": row.allowed_docker_registries or [], "integration_id": row.integration_id,
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


def _payload(out: Outcome) -> dict[str, Any]:
    return {"ok": out.ok, "msg": out.msg, "domain": None if out.row is None else domain_obj(out.row)}


@mutation.field("create_domain")
async def resolve_create_domain(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.create_domain(ctx.manager, ctx.requester, name, props))


@mutation.field("modify_domain")
async def resolve_modify_domain(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.modify_domain(ctx.manager, ctx.requester, name, props))


@mutation.field("delete_domain")
async def resolve_delete_domain(_: Any, info: Any, name: str) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.delete_domain(ctx.manager, ctx.requester, name))


@mutation.field("purge_domain")
async def resolve_purge_domain(_: Any, info: Any, name: str) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.purge_domain(ctx.manager, ctx.requester, name))
