"""ScalingGroup (resource group): SDL, resolvers and row -> object mapping (superadmins read
all of them, domain admins those of their domain)."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from bai.manager.services import gql_queries as svc

from .context import context_of

QUERIES = '''
  "A scaling group by name (superadmin only)."
  scaling_group(name: String): ScalingGroup

  "Scaling groups (superadmin only)."
  scaling_groups(name: String, is_active: Boolean): [ScalingGroup]

  "The scaling groups associated with a domain (admins; a domain admin only their own)."
  scaling_groups_for_domain(domain: String!, is_active: Boolean): [ScalingGroup]
'''

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
'''

query = QueryType()
BINDABLES = (query,)


def scaling_group_obj(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active,
        "is_public": row.is_public, "created_at": row.created_at, "wsproxy_addr": row.wsproxy_addr,
        "wsproxy_api_token": None, "driver": row.driver, "driver_opts": {}, "scheduler": row.scheduler,
        "scheduler_opts": row.scheduler_opts or {}, "use_host_network": row.use_host_network,
    }


@query.field("scaling_group")
async def resolve_scaling_group(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    if name is None:
        return None
    rows = await svc.scaling_groups(ctx.manager.db, name=name)
    return scaling_group_obj(rows[0]) if rows else None


@query.field("scaling_groups")
async def resolve_scaling_groups(_: Any, info: Any, name: str | None = None,
                                 is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    svc.require_superadmin(ctx.requester)
    return [scaling_group_obj(r) for r in await svc.scaling_groups(ctx.manager.db, name=name, is_active=is_active)]


@query.field("scaling_groups_for_domain")
async def resolve_scaling_groups_for_domain(_: Any, info: Any, domain: str,
                                            is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    domain_name = svc.admin_domain(ctx.requester, domain)
    rows = await svc.scaling_groups(ctx.manager.db, domain_name=domain_name, is_active=is_active)
    return [scaling_group_obj(r) for r in rows]
