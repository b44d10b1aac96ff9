"""VirtualFolder and QuotaScope: ``vfolder``, ``vfolder_list`` (+ ``vfolder_own_list``,
``vfolder_invited_list``, ``vfolder_project_list``), ``quota_scope``, and the mutations
``set_quota_scope`` / ``unset_quota_scope`` with the original's names and fields (the official
client's ``vfolder list`` and ``admin quota-scope`` documents). Who sees what:
services/vfolders/queries.py."""

from __future__ import annotations

import uuid
from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from bai.manager.services import gql_queries as page_rules
from bai.manager.services.vfolders import queries as svc
from bai.manager.services.vfolders.access import Folder

from .context import context_of

_LIST_ARGS = '''
    limit: Int!
    offset: Int!
    filter: String
    order: String'''

QUERIES = f'''
  "A folder by ID the caller reaches (admins: of their domain; superadmins and monitors: any), or null."
  vfolder(id: String): VirtualFolder

  "Folders: every one for superadmins and monitors, the domain's for domain admins, those a user reaches."
  vfolder_list({_LIST_ARGS}
    domain_name: String
    group_id: UUID
    access_key: String
  ): VirtualFolderList

  "The caller's own folders."
  vfolder_own_list({_LIST_ARGS}
  ): VirtualFolderList

  "Folders shared with the caller (accepted invitations)."
  vfolder_invited_list({_LIST_ARGS}
  ): VirtualFolderList

  "Project folders the caller reaches."
  vfolder_project_list({_LIST_ARGS}
  ): VirtualFolderList

  "A quota scope's usage and limit on a storage host (`user:<uuid>` or `project:<uuid>`)."
  quota_scope(storage_host_name: String!, quota_scope_id: String!): QuotaScope
'''

MUTATIONS = '''
  "Set a quota scope's hard limit (superadmins; domain admins for their domain's users and projects)."
  set_quota_scope(quota_scope_id: String!, storage_host_name: String!, props: QuotaScopeInput!): SetQuotaScope

  "Remove a quota scope's limit."
  unset_quota_scope(quota_scope_id: String!, storage_host_name: String!): UnsetQuotaScope
'''

SDL = '''
type VirtualFolder implements Item {
  id: ID
  host: String
  quota_scope_id: String
  name: String
  user: UUID
  user_email: String
  group: UUID
  group_name: String
  creator: String
  unmanaged_path: String
  usage_mode: String
  permission: String
  ownership_type: String
  max_files: Int
  max_size: BigInt
  created_at: DateTime
  last_used: DateTime
  num_files: Int
  cur_size: BigInt
  cloneable: Boolean
  status: String
}

type VirtualFolderList implements PaginatedList {
  items: [VirtualFolder]!
  total_count: Int!
}

type QuotaDetails {
  usage_bytes: BigInt
  usage_count: BigInt
  hard_limit_bytes: BigInt
}

type QuotaScope {
  id: ID!
  quota_scope_id: String!
  storage_host_name: String!
  details: QuotaDetails!
}

input QuotaScopeInput {
  hard_limit_bytes: BigInt
}

type SetQuotaScope {
  quota_scope: QuotaScope
}

type UnsetQuotaScope {
  quota_scope: QuotaScope
}
'''

query = QueryType()
mutation = MutationType()
vfolder_type = ObjectType("VirtualFolder")
BINDABLES = (query, mutation, vfolder_type)


def vfolder_obj(f: Folder) -> dict[str, Any]:
    return {
        "id": str(f.id), "host": f.host, "quota_scope_id": f.quota_scope_id, "name": f.name, "user": f.user,
        "user_email": f.user_email, "group": f.group, "group_name": f.group_name, "creator": f.creator,
        "unmanaged_path": f.unmanaged_path, "usage_mode": f.usage_mode, "permission": f.permission,
        "ownership_type": f.ownership_type, "max_files": f.max_files, "max_size": f.max_size,
        "created_at": f.created_at, "last_used": f.last_used, "num_files": f.num_files, "cur_size": f.cur_size,
        "cloneable": f.cloneable, "status": f.status,
    }


async def _page(info: Any, scope: str, limit: int, offset: int, filter: str | None, order: str | None,
                **narrow: Any) -> dict[str, Any]:
    ctx = context_of(info)
    page_rules.check_page(limit, offset, ctx.max_page_size)
    page = await svc.folder_page(ctx.manager, ctx.requester, scope=scope, limit=limit, offset=offset,
                                 filter_=filter, order=order, **narrow)
    return {"items": [vfolder_obj(f) for f in page.items], "total_count": page.total_count}


@query.field("vfolder")
async def resolve_vfolder(_: Any, info: Any, id: str | None = None) -> dict[str, Any] | None:
    if not id:
        return None
    try:
        folder_id = uuid.UUID(id)
    except ValueError:
        return None
    ctx = context_of(info)
    found = await svc.folder(ctx.manager, ctx.requester, folder_id)
    return None if found is None else vfolder_obj(found)


@query.field("vfolder_list")
async def resolve_vfolder_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                               order: str | None = None, domain_name: str | None = None,
                               group_id: uuid.UUID | None = None, access_key: str | None = None) -> dict[str, Any]:
    return await _page(info, "reach", limit, offset, filter, order, domain_name=domain_name,
                       group_id=group_id, access_key=access_key)


@query.field("vfolder_own_list")
async def resolve_vfolder_own_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                                   order: str | None = None) -> dict[str, Any]:
    return await _page(info, "own", limit, offset, filter, order)


@query.field("vfolder_invited_list")
async def resolve_vfolder_invited_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                                       order: str | None = None) -> dict[str, Any]:
    return await _page(info, "invited", limit, offset, filter, order)


@query.field("vfolder_project_list")
async def resolve_vfolder_project_list(_: Any, info: Any, limit: int, offset: int, filter: str | None = None,
                                       order: str | None = None) -> dict[str, Any]:
    return await _page(info, "project", limit, offset, filter, order)


@query.field("quota_scope")
async def resolve_quota_scope(_: Any, info: Any, storage_host_name: str, quota_scope_id: str) -> dict[str, Any]:
    ctx = context_of(info)
    return await svc.quota_scope(ctx.manager, ctx.requester, storage_host_name, quota_scope_id)


@mutation.field("set_quota_scope")
async def resolve_set_quota_scope(_: Any, info: Any, quota_scope_id: str, storage_host_name: str,
                                  props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    limit = props.get("hard_limit_bytes")
    scope = await svc.set_quota_scope(ctx.manager, ctx.requester, storage_host_name, quota_scope_id,
                                      None if limit is None else int(limit))
    return {"quota_scope": scope}


@mutation.field("unset_quota_scope")
async def resolve_unset_quota_scope(_: Any, info: Any, quota_scope_id: str, storage_host_name: str) -> dict[str, Any]:
    ctx = context_of(info)
    return {"quota_scope": await svc.unset_quota_scope(ctx.manager, ctx.requester, storage_host_name, quota_scope_id)}
