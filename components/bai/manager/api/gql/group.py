"""Group (project): SDL, resolvers and row -> object mapping. Superadmins see every project,
domain admins their domain's, users the projects they belong to."""

from __future__ import annotations

import uuid
from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from bai.manager import errors
from bai.manager.services import gql_queries as svc
from bai.manager.services.accounts import groups as accounts
from bai.manager.services.accounts.outcome import Outcome
from bai.manager.store.keypairs import Requester

from .context import context_of

QUERIES = '''
  "A project by ID, or null when it does not exist or lies outside the caller's scope."
  group(id: UUID!, domain_name: String, type: [String]): Group

  "Projects visible to the caller (a user: those they belong to)."
  groups(domain_name: String, is_active: Boolean, type: [String]): [Group]

  "Projects with this name visible to the caller."
  groups_by_name(name: String!, domain_name: String): [Group]
'''

MUTATIONS = '''
  "A new project (a superadmin anywhere, a domain admin in their domain)."
  create_group(name: String!, props: GroupInput!): CreateGroup

  "Change a project; `user_update_mode` add/remove with `user_uuids` changes its members."
  modify_group(gid: UUID!, props: ModifyGroupInput!): ModifyGroup

  "Soft delete: the project becomes inactive."
  delete_group(gid: UUID!): DeleteGroup

  "Hard delete of the project, its memberships and finished sessions (refused while a session is live)."
  purge_group(gid: UUID!): PurgeGroup
'''

SDL = '''
input GroupInput {
  "GENERAL (the only type here)."
  type: String = "GENERAL"
  description: String = ""
  is_active: Boolean = true
  domain_name: String!
  total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString
  integration_id: String
  resource_policy: String = "default"
  "The project's own registry as JSON with the keys registry (a host) and project: its images are allowed here."
  container_registry: JSONString
}

"Fields left out or null stay as they are."
input ModifyGroupInput {
  name: String
  description: String
  is_active: Boolean
  domain_name: String
  total_resource_slots: JSONString
  "add or remove `user_uuids` to/from the project."
  user_update_mode: String
  user_uuids: [String]
  allowed_vfolder_hosts: JSONString
  integration_id: String
  resource_policy: String
  "{} unsets it."
  container_registry: JSONString
}

type CreateGroup {
  ok: Boolean
  msg: String
  group: Group
}

type ModifyGroup {
  ok: Boolean
  msg: String
  group: Group
}

type DeleteGroup {
  ok: Boolean
  msg: String
}

type PurgeGroup {
  ok: Boolean
  msg: String
}

type Group {
  id: UUID
  name: String
  description: String
  is_active: Boolean
  created_at: DateTime
  modified_at: DateTime
  domain_name: String
  total_resource_slots: JSONString
  allowed_vfolder_hosts: JSONString
  integration_id: String
  resource_policy: String
  type: String
  container_registry: JSONString
  scaling_groups: [String]
}
'''

#: Every project is a general one (model-store projects do not exist here).
GROUP_TYPES = frozenset({"GENERAL"})

query = QueryType()
mutation = MutationType()
group_type = ObjectType("Group")
BINDABLES = (query, mutation, group_type)


def group_obj(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "description": row.description, "is_active": row.is_active,
        "created_at": row.created_at, "modified_at": row.modified_at, "domain_name": row.domain_name,
        "total_resource_slots": row.total_resource_slots or {},
        "allowed_vfolder_hosts": row.allowed_vfolder_hosts or {}, "integration_id": row.integration_id,
        "resource_policy": row._mapping.get("resource_policy", "default"), "type": "GENERAL",
        "container_registry": row._mapping.get("container_registry") or {},
    }


def _scope(req: Requester, domain_name: str | None) -> dict[str, Any]:
    """Conditions that confine a project query to what ``req`` may see."""
    if svc.reads_all(req):
        return {"domain_name": domain_name}
    if domain_name is not None and domain_name != req.domain_name:
        raise errors.InsufficientPrivilege()
    if req.role == "admin":
        return {"domain_name": req.domain_name}
    return {"domain_name": req.domain_name, "member": req.user_uuid}


def _wants_general(type_: list[str] | None) -> bool:
    return type_ is None or any(t.upper() in GROUP_TYPES for t in type_)


@query.field("group")
async def resolve_group(_: Any, info: Any, id: uuid.UUID, domain_name: str | None = None,
                        type: list[str] | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    rows = await svc.groups(ctx.manager.db, group_id=id, **_scope(ctx.requester, domain_name))
    return group_obj(rows[0]) if rows and _wants_general(type) else None


@query.field("groups")
async def resolve_groups(_: Any, info: Any, domain_name: str | None = None, is_active: bool | None = None,
                         type: list[str] | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    scope = _scope(ctx.requester, domain_name)
    if not _wants_general(type):
        return []
    return [group_obj(r) for r in await svc.groups(ctx.manager.db, is_active=is_active, **scope)]


@query.field("groups_by_name")
async def resolve_groups_by_name(_: Any, info: Any, name: str, domain_name: str | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    return [group_obj(r) for r in await svc.groups(ctx.manager.db, name=name, **_scope(ctx.requester, domain_name))]


@group_type.field("scaling_groups")
async def resolve_scaling_groups(obj: dict[str, Any], info: Any) -> list[str]:
    rows = await svc.scaling_groups(context_of(info).manager.db, domain_name=obj["domain_name"])
    return [r.name for r in rows]


def _payload(out: Outcome) -> dict[str, Any]:
    return {"ok": out.ok, "msg": out.msg, "group": None if out.row is None else group_obj(out.row)}


@mutation.field("create_group")
async def resolve_create_group(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.create_group(ctx.manager, ctx.requester, name, props))


@mutation.field("modify_group")
async def resolve_modify_group(_: Any, info: Any, gid: uuid.UUID, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.modify_group(ctx.manager, ctx.requester, gid, props))


@mutation.field("delete_group")
async def resolve_delete_group(_: Any, info: Any, gid: uuid.UUID) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.delete_group(ctx.manager, ctx.requester, gid))


@mutation.field("purge_group")
async def resolve_purge_group(_: Any, info: Any, gid: uuid.UUID) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(await accounts.purge_group(ctx.manager, ctx.requester, gid))
