"""ScalingGroup (resource group): SDL, resolvers and row -> object mapping. Superadmins and
monitors read all of them (the app-proxy token only superadmins), domain admins those of their
domain; creating, changing, deleting and associating them is for superadmins
(services.scaling_groups)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.services import scaling_groups as sgroups

from .context import context_of

QUERIES = '''
  "A scaling group by name (superadmin only)."
  scaling_group(name: String): ScalingGroup

  "Scaling groups (superadmin only)."
  scaling_groups(name: String, is_active: Boolean): [ScalingGroup]

  "The scaling groups associated with a domain (admins; a domain admin only their own)."
  scaling_groups_for_domain(domain: String!, is_active: Boolean): [ScalingGroup]

  "The scaling groups associated with a project, by its UUID (superadmin only)."
  scaling_groups_for_user_group(user_group: String!, is_active: Boolean): [ScalingGroup]

  "The scaling groups associated with a keypair (superadmin only)."
  scaling_groups_for_keypair(access_key: String!, is_active: Boolean): [ScalingGroup]
'''

MUTATIONS = '''
  "A new scaling group (superadmin only); ok=false when the name is taken."
  create_scaling_group(name: String!, props: CreateScalingGroupInput!): CreateScalingGroup
  "Changes the given fields of a scaling group (superadmin only)."
  modify_scaling_group(name: String!, props: ModifyScalingGroupInput!): ModifyScalingGroup
  "Deletes a scaling group no agent or session refers to (superadmin only)."
  delete_scaling_group(name: String!): DeleteScalingGroup
  "Lets the domain's sessions use the scaling group (superadmin only)."
  associate_scaling_group_with_domain(scaling_group: String!, domain: String!): AssociateScalingGroupWithDomain
  disassociate_scaling_group_with_domain(scaling_group: String!, domain: String!):
    DisassociateScalingGroupWithDomain
  "Lets the project's sessions use the scaling group (superadmin only)."
  associate_scaling_group_with_user_group(scaling_group: String!, user_group: UUID!):
    AssociateScalingGroupWithUserGroup
  disassociate_scaling_group_with_user_group(scaling_group: String!, user_group: UUID!):
    DisassociateScalingGroupWithUserGroup
  "Lets the keypair's sessions use the scaling group (superadmin only)."
  associate_scaling_group_with_keypair(scaling_group: String!, access_key: String!):
    AssociateScalingGroupWithKeyPair
  disassociate_scaling_group_with_keypair(scaling_group: String!, access_key: String!):
    DisassociateScalingGroupWithKeyPair
  "The plural forms: all of the scaling groups, or (one unknown, or (dis)associated already) none."
  associate_scaling_groups_with_domain(scaling_groups: [String]!, domain: String!):
    AssociateScalingGroupsWithDomain
  disassociate_scaling_groups_with_domain(scaling_groups: [String]!, domain: String!):
    DisassociateScalingGroupsWithDomain
  associate_scaling_groups_with_user_group(scaling_groups: [String]!, user_group: UUID!):
    AssociateScalingGroupsWithUserGroup
  disassociate_scaling_groups_with_user_group(scaling_groups: [String]!, user_group: UUID!):
    DisassociateScalingGroupsWithUserGroup
  associate_scaling_groups_with_keypair(scaling_groups: [String]!, access_key: String!):
    AssociateScalingGroupsWithKeyPair
  disassociate_scaling_groups_with_keypair(scaling_groups: [String]!, access_key: String!):
    DisassociateScalingGroupsWithKeyPair
  "Removes every scaling group of the domain / project (superadmin only)."
  disassociate_all_scaling_groups_with_domain(domain: String!): DisassociateAllScalingGroupsWithDomain
  disassociate_all_scaling_groups_with_group(user_group: UUID!): DisassociateAllScalingGroupsWithGroup
'''

_PAYLOADS = ("ModifyScalingGroup", "DeleteScalingGroup", "AssociateScalingGroupWithDomain",
             "DisassociateScalingGroupWithDomain", "AssociateScalingGroupWithUserGroup",
             "DisassociateScalingGroupWithUserGroup", "AssociateScalingGroupWithKeyPair",
             "DisassociateScalingGroupWithKeyPair", "AssociateScalingGroupsWithDomain",
             "DisassociateScalingGroupsWithDomain", "AssociateScalingGroupsWithUserGroup",
             "DisassociateScalingGroupsWithUserGroup", "AssociateScalingGroupsWithKeyPair",
             "DisassociateScalingGroupsWithKeyPair", "DisassociateAllScalingGroupsWithDomain",
             "DisassociateAllScalingGroupsWithGroup")

SDL = '''
type ScalingGroup {
  name: String
  description: String
  is_active: Boolean
  is_public: Boolean
  created_at: DateTime
  wsproxy_addr: String
  wsproxy_api_token: String
  driver: String
  driver_opts: JSONString
  scheduler: String
  scheduler_opts: JSONString
  use_host_network: Boolean
}

input CreateScalingGroupInput {
  description: String = ""
  is_active: Boolean = true
  is_public: Boolean = true
  wsproxy_addr: String = null
  wsproxy_api_token: String = null
  "static (the only driver this manager has)"
  driver: String!
  driver_opts: JSONString = "{}"
  "fifo (the only scheduler this manager has)"
  scheduler: String!
  scheduler_opts: JSONString = "{}"
  use_host_network: Boolean = false
}

input ModifyScalingGroupInput {
  description: String
  is_active: Boolean
  is_public: Boolean
  wsproxy_addr: String
  wsproxy_api_token: String
  driver: String
  driver_opts: JSONString
  scheduler: String
  scheduler_opts: JSONString
  use_host_network: Boolean
}

type CreateScalingGroup {
  ok: Boolean
  msg: String
  scaling_group: ScalingGroup
}
''' + "".join(f"\ntype {p} {{\n  ok: Boolean\n  msg: String\n}}\n" for p in _PAYLOADS)

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def scaling_group_obj(row: Any, *, with_token: bool = False) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active,
        "is_public": row.is_public, "created_at": row.created_at, "wsproxy_addr": row.wsproxy_addr,
        "wsproxy_api_token": row.wsproxy_api_token if with_token else None, "driver": row.driver,
        "driver_opts": row.driver_opts or {}, "scheduler": row.scheduler,
        "scheduler_opts": row.scheduler_opts or {}, "use_host_network": row.use_host_network,
    }


def _objs(rows: list[Any], info: Any) -> list[dict[str, Any]]:
    with_token = context_of(info).requester.is_superadmin
    return [scaling_group_obj(r, with_token=with_token) for r in rows]


@query.field("scaling_group")
async def resolve_scaling_group(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    if name is None:
        return None
    rows = await svc.scaling_groups(ctx.manager.db, name=name)
    return _objs(rows, info)[0] if rows else None


@query.field("scaling_groups")
async def resolve_scaling_groups(_: Any, info: Any, name: str | None = None,
                                 is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    return _objs(await svc.scaling_groups(ctx.manager.db, name=name, is_active=is_active), info)


@query.field("scaling_groups_for_domain")
async def resolve_scaling_groups_for_domain(_: Any, info: Any, domain: str,
                                            is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    domain_name = svc.admin_domain(ctx.requester, domain)
    return _objs(await svc.scaling_groups(ctx.manager.db, domain_name=domain_name, is_active=is_active), info)


@query.field("scaling_groups_for_user_group")
async def resolve_scaling_groups_for_user_group(_: Any, info: Any, user_group: str,
                                                is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    group_id = sgroups.group_id(user_group)
    if group_id is None:
        return []
    return _objs(await svc.scaling_groups(ctx.manager.db, group_id=group_id, is_active=is_active), info)


@query.field("scaling_groups_for_keypair")
async def resolve_scaling_groups_for_keypair(_: Any, info: Any, access_key: str,
                                             is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    return _objs(await svc.scaling_groups(ctx.manager.db, access_key=access_key, is_active=is_active), info)


@mutation.field("create_scaling_group")
async def resolve_create(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await sgroups.create(ctx.manager, ctx.requester, name, props)
    return {"ok": out.ok, "msg": out.msg,
            "scaling_group": scaling_group_obj(out.row, with_token=True) if out.row is not None else None}


@mutation.field("modify_scaling_group")
async def resolve_modify(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await sgroups.modify(ctx.manager, ctx.requester, name, props)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("delete_scaling_group")
async def resolve_delete(_: Any, info: Any, name: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await sgroups.delete(ctx.manager, ctx.requester, name)
    return {"ok": out.ok, "msg": out.msg}


def _bind_association(kind: str, suffix: str, arg: str) -> None:
    async def associate(_: Any, info: Any, scaling_group: str, **key: Any) -> dict[str, Any]:
        ctx = context_of(info)
        out = await sgroups.associate(ctx.manager, ctx.requester, kind, scaling_group, key[arg])
        return {"ok": out.ok, "msg": out.msg}

    async def disassociate(_: Any, info: Any, scaling_group: str, **key: Any) -> dict[str, Any]:
        ctx = context_of(info)
        out = await sgroups.disassociate(ctx.manager, ctx.requester, kind, scaling_group, key[arg])
        return {"ok": out.ok, "msg": out.msg}

    async def associate_many(_: Any, info: Any, scaling_groups: list[str | None], **key: Any) -> dict[str, Any]:
        ctx = context_of(info)
        out = await sgroups.associate_many(ctx.manager, ctx.requester, kind, _names(scaling_groups), key[arg])
        return {"ok": out.ok, "msg": out.msg}

    async def disassociate_many(_: Any, info: Any, scaling_groups: list[str | None], **key: Any) -> dict[str, Any]:
        ctx = context_of(info)
        out = await sgroups.disassociate_many(ctx.manager, ctx.requester, kind, _names(scaling_groups), key[arg])
        return {"ok": out.ok, "msg": out.msg}

    mutation.set_field(f"associate_scaling_group_with_{suffix}", associate)
    mutation.set_field(f"disassociate_scaling_group_with_{suffix}", disassociate)
    mutation.set_field(f"associate_scaling_groups_with_{suffix}", associate_many)
    mutation.set_field(f"disassociate_scaling_groups_with_{suffix}", disassociate_many)


def _names(scaling_groups: list[str | None]) -> list[str]:
    return [n for n in scaling_groups if n is not None]


_bind_association("domain", "domain", "domain")
_bind_association("group", "user_group", "user_group")
_bind_association("keypair", "keypair", "access_key")


@mutation.field("disassociate_all_scaling_groups_with_domain")
async def resolve_disassociate_all_with_domain(_: Any, info: Any, domain: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await sgroups.disassociate_all(ctx.manager, ctx.requester, "domain", domain)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("disassociate_all_scaling_groups_with_group")
async def resolve_disassociate_all_with_group(_: Any, info: Any, user_group: Any) -> dict[str, Any]:
    ctx = context_of(info)
    out = await sgroups.disassociate_all(ctx.manager, ctx.requester, "group", user_group)
    return {"ok": out.ok, "msg": out.msg}
